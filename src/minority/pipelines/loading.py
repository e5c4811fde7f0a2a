"""Model loading: hub ids, local diffusers folders, embedded models and the tiny random pipelines.

:func:`load_components` returns ready, frozen :class:`~minority.pipelines.components.Components` for any
diffusers Stable Diffusion checkpoint (SD 1.x, SD 2.x epsilon / v-prediction, SDXL, SDXL-Lightning) or a
pixel-space ``UNet2DModel`` checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

import torch

from minority.embedded import resolve_embedded
from minority.errors import MinorityError
from minority.pipelines.components import Components
from minority.pipelines.flow_loading import load_flow
from minority.pipelines.single_file import load_single_file
from minority.pipelines.tiny import build_tiny_sd
from minority.pipelines.tiny_flow import build_tiny_flow

log = logging.getLogger("minority")

# --------------------------------------------------------------------------------------------------
# Loading


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") > 1


# A hub repo id: ``org/name`` (letters, digits, ``-``, ``_``, ``.``; dots allowed, as in ``...-xl-base-1.0``).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Files that unpickle (and so may run code) when loaded: never loaded by this project.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


def _model_file_error(name: str, path: Path) -> MinorityError:
    """The one-line refusal of a ``--model`` that is a file, not a model folder or hub id."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return MinorityError(
            f"{name} is a pickle checkpoint ({path.suffix}): minority never unpickles files (loading one can run "
            "arbitrary code). Pass a diffusers folder or hub id, or convert the weights to safetensors first.")
    return MinorityError(f"{name} is a file, not a model folder: pass a diffusers folder (with model_index.json) or a "
                         "hub id.")


def hub_offline() -> bool:
    """Whether the Hugging Face hub is unreachable: ``HF_HUB_OFFLINE=1``, or no answer within 3 s (probed once per
    process), so that hub ids load from the local hub cache at once instead of retrying every file."""
    global _OFFLINE
    if _OFFLINE is None:
        from huggingface_hub import constants, get_session  # lazy: only hub ids need the hub client

        if constants.HF_HUB_OFFLINE:
            _OFFLINE = True
        else:
            try:
                get_session().head(constants.ENDPOINT, timeout=3)
                _OFFLINE = False
            except Exception:  # noqa: BLE001 -- any network failure means: use the cache
                log.info("The Hugging Face hub (%s) is unreachable: loading hub ids from the local cache only.",
                         constants.ENDPOINT)
                _OFFLINE = True
    return _OFFLINE


_OFFLINE: bool | None = None


TINY_RANDOM = {"tiny-random-sd": "sd", "tiny-random-sdxl": "sdxl", "tiny-random-sd3": "sd3",
               "tiny-random-flux-dev": "flux-dev", "tiny-random-flux-schnell": "flux-schnell"}


def cache_dir() -> Path:
    """``$MINORITY_CACHE`` or ``~/.cache/minority``."""
    return Path(os.environ.get("MINORITY_CACHE", Path.home() / ".cache" / "minority")).expanduser()


def default_model() -> str:
    """``fashion-sd`` once the embedded model ships; until then the tiny random SD pipeline."""
    return "fashion-sd" if resolve_embedded("fashion-sd") is not None else "tiny-random-sd"


def resolve_model(name: str) -> tuple[str, str]:
    """Map a ``--model`` value to ``(location, kind)`` with kind ``"folder"``, ``"embedded"``, ``"tiny"`` or ``"hub"``."""
    if name in TINY_RANDOM:
        folder = cache_dir() / name
        if not (folder / "model_index.json").is_file():
            log.warning("Building the tiny RANDOMLY INITIALISED pipeline %r in %s (noise-like images).", name, folder)
            fam = TINY_RANDOM[name]
            build_tiny_sd(folder, family=fam) if fam in ("sd", "sdxl") else build_tiny_flow(folder, family=fam)
        return str(folder), "tiny"
    path = resolve_embedded(name)  # embedded models trained and shipped by this project
    if path is not None:
        return str(path), "embedded"
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p), "folder"
    if p.is_file():
        if p.suffix.lower() == ".safetensors":
            return str(p), "single-file"
        raise _model_file_error(name, p)
    if HUB_ID.match(name):
        return name, "hub"
    raise MinorityError(f"Model folder {name!r} does not exist: pass an existing diffusers folder or a hub id "
                        "(org/name).")


def _missing(name: str, err: Exception) -> MinorityError:
    from huggingface_hub import constants  # lazy: only hub ids need the hub client

    where = "the hub is unreachable and its local cache" if hub_offline() else "the Hugging Face hub or its cache"
    return MinorityError(
        f"Model {name!r} could not be loaded: it is not a local folder, not an embedded model, and {where} "
        f"({constants.HF_HUB_CACHE}) has no usable copy ({type(err).__name__}). "
        "Pass a local diffusers folder with --model PATH, or run `minority models` for the embedded ones."
    )


def hub_kwargs(kind: str) -> dict:
    """``from_pretrained`` options: ``local_files_only`` for hub ids while the hub is unreachable."""
    return {"local_files_only": True} if kind == "hub" and hub_offline() else {}


def _load_lightning_unet(unet, spec: str):
    """Load SDXL-Lightning UNet weights (a ``.safetensors`` path or ``repo_id/filename``) into ``unet``."""
    from safetensors.torch import load_file

    path = Path(spec).expanduser()
    if not path.is_file():
        if _looks_like_path(spec) and not spec.count("/") >= 2:
            raise MinorityError(f"Lightning UNet file {spec!r} not found: pass a .safetensors path or 'repo_id/file.safetensors'.")
        repo, _, fname = spec.rpartition("/")
        if not repo or not fname.endswith(".safetensors"):
            raise MinorityError(f"Lightning UNet {spec!r} is neither a file nor 'repo_id/file.safetensors' (safetensors only).")
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(repo, fname, **hub_kwargs("hub")))
        except Exception as err:  # noqa: BLE001
            raise MinorityError(
                f"Lightning UNet {spec!r} could not be downloaded ({type(err).__name__}): pass a local .safetensors path."
            ) from err
    if path.suffix != ".safetensors":
        raise MinorityError(f"{path} is not a .safetensors file: only safetensors weights are loaded.")
    state = load_file(str(path))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MinorityError(
            f"{path} does not fit the base UNet ({len(missing)} missing, {len(unexpected)} unexpected keys): "
            "use the Lightning UNet file that matches the base SDXL model."
        )
    return unet


def load_components(
    model: str,
    *,
    lightning_unet: str | None = None,
    config: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Components:
    """Load frozen, ready components for a diffusers checkpoint.

    Args:
        model: hub id (``"stabilityai/stable-diffusion-2"``, ``"stabilityai/stable-diffusion-3.5-medium"``,
            ``"black-forest-labs/FLUX.1-dev"``, ...), a local diffusers folder (``model_index.json``; pixel-space:
            a ``UNet2DModel`` and a scheduler), an embedded model name (``minority models``), or a single-file
            SD / SDXL ``.safetensors`` checkpoint (original layout; :mod:`minority.pipelines.single_file`).
        lightning_unet: SDXL-Lightning UNet weights (path or ``repo_id/file.safetensors``) loaded into the
            base SDXL UNet; switches to trailing timesteps with guidance 1 and 4 steps by default.
        config: base model (diffusers folder or hub id) whose configuration a single-file ``model`` is loaded
            with (``--config``); None = diffusers' guess from the checkpoint's keys.
        device, dtype: where and in which precision to place the modules.
    Returns:
        :class:`Components` with weights frozen (no weight gradients are ever computed).
    """
    location, kind = resolve_model(model)
    if kind == "single-file":
        return _single_file(Path(location), model, config, lightning_unet, device, dtype)
    if config is not None:
        raise MinorityError(f"--config applies to single-file .safetensors checkpoints only; {model} is a model "
                            "folder or hub id with its own configuration: drop --config.")
    hub = hub_kwargs(kind)
    cls = (index := _read_index(location, kind, model)).get("_class_name", "")
    if cls in ("StableDiffusion3Pipeline", "FluxPipeline"):  # flow transformers: their own loader
        return _flow(location, model, index, kind, device, dtype, lightning_unet)
    if cls in ("DDPMPipeline", "DDIMPipeline", "UNet2DModel") or (index.get("unet") or [None, None])[1] in PIXEL_UNETS:
        return _load_pixel(location, model, device, dtype, flat=cls == "UNet2DModel", index=index, hub=hub)
    return _load_sd(location, model, index, kind, lightning_unet, device, dtype)


def _load_sd(location: str, model: str, index: dict, kind: str, lightning_unet: str | None, device, dtype) -> Components:
    """An SD 1.x / 2.x / SDXL pipeline folder or hub repo (SDXL-Lightning: its UNet file loaded into the base)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    kw = {"use_safetensors": True, **(hub := hub_kwargs(kind))}
    cls = index.get("_class_name", "")
    try:
        xl = "text_encoder_2" in index or "XL" in cls
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(location, subfolder="vae", **kw)
        tokenizers = [CLIPTokenizer.from_pretrained(location, subfolder="tokenizer", **hub)]
        encoders = [CLIPTextModel.from_pretrained(location, subfolder="text_encoder", **kw)]
        if xl:
            tokenizers.append(CLIPTokenizer.from_pretrained(location, subfolder="tokenizer_2", **hub))
            encoders.append(CLIPTextModelWithProjection.from_pretrained(location, subfolder="text_encoder_2", **kw))
        scheduler = DDIMScheduler.from_pretrained(location, subfolder="scheduler", **hub)
    except MinorityError:
        raise
    except (OSError, ValueError) as err:
        if kind == "hub":
            raise _missing(model, err) from err
        raise MinorityError(f"Could not load the diffusers folder {location!r}: {str(err).splitlines()[0]}") from err

    family = "sdxl" if xl else "sd"
    if lightning_unet:
        if not xl:
            raise MinorityError("--lightning-unet needs an SDXL base model (e.g. stabilityai/stable-diffusion-xl-base-1.0).")
        _load_lightning_unet(unet, lightning_unet)
        scheduler = DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing")
        family = "sdxl-lightning"
    comps = Components(
        family=family, unet=unet, scheduler=scheduler, vae=vae, tokenizers=tokenizers, text_encoders=encoders,
        name=model, force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", xl)), source=kind,
        model_defaults=dict(index.get("minority_defaults", {})) if not lightning_unet else {},
    )
    return comps.to(device=device, dtype=dtype).freeze()


def _single_file(path: Path, model: str, config: str | None, lightning_unet: str | None, device, dtype) -> Components:
    """A single-file SD / SDXL checkpoint (:func:`minority.pipelines.single_file.load_single_file`)."""
    if lightning_unet:
        raise MinorityError("--lightning-unet loads into a diffusers SDXL base folder or hub id, not into a single-file "
                            "checkpoint: convert the checkpoint to a folder first or drop --lightning-unet.")
    pipe, family, index = load_single_file(path, model, config, offline=hub_offline(), dtype=dtype)
    comps = components_from_pipe(pipe)
    comps = dataclasses.replace(comps, family=family, name=model, source="single-file",
                                force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt",
                                                                            family == "sdxl")),
                                model_defaults=dict(index.get("minority_defaults", {})))
    return comps.to(device=device, dtype=dtype).freeze()


def _flow(location: str, model: str, index: dict, kind: str, device, dtype, lightning_unet: str | None) -> Components:
    """An SD3 / FLUX pipeline folder or hub repo (:func:`minority.pipelines.flow_loading.load_flow`)."""
    if lightning_unet:
        raise MinorityError("--lightning-unet is for SDXL base models only, not for a flow (SD3 / FLUX) model.")
    try:
        return load_flow(location, model, index, kind, device, dtype, hub_kwargs(kind))
    except (OSError, ValueError) as err:
        if kind == "hub":
            raise _missing(model, err) from err
        raise MinorityError(f"Could not load the diffusers folder {location!r}: {str(err).splitlines()[0]}") from err


def _read_index(location: str, kind: str, name: str) -> dict:
    """``model_index.json`` of a pipeline (or ``config.json`` of a bare ``UNet2DModel`` folder)."""
    folder = Path(location)
    if kind == "hub":
        from huggingface_hub import hf_hub_download

        try:
            return json.loads(Path(hf_hub_download(location, "model_index.json", **hub_kwargs(kind))).read_text())
        except Exception as err:  # noqa: BLE001 -- offline, unknown repo, gated repo, ...
            raise _missing(name, err) from err
    for fname in ("model_index.json", "config.json"):
        if (folder / fname).is_file():
            try:
                return json.loads((folder / fname).read_text())
            except json.JSONDecodeError as err:
                raise MinorityError(f"{folder / fname} is not valid JSON ({err.msg}, line {err.lineno}).") from err
    raise MinorityError(f"{folder} is not a diffusers model folder (no model_index.json): pass a folder saved by diffusers.")


PIXEL_UNETS = ("UNet2DModel", "ADMUNet2DModel")


def _load_pixel(location: str, name: str, device, dtype, flat: bool = False, index: dict | None = None,
                hub: dict | None = None) -> Components:
    """Pixel-space ``UNet2DModel`` (or converted guided-diffusion ``ADMUNet2DModel``) + ``DDPMScheduler`` (a
    pipeline folder with ``unet/``, or a flat UNet folder)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from minority.nets.adm import ADMUNet2DModel  # lazy: imports diffusers (loaded on use)

    kw = {"use_safetensors": True, **(hub or {})}
    unet_cls = ADMUNet2DModel if (index or {}).get("unet", [None, None])[1] == "ADMUNet2DModel" else UNet2DModel
    try:
        unet = unet_cls.from_pretrained(location, subfolder=None if flat else "unet", **kw)
        scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler", **(hub or {}))
    except (OSError, ValueError) as err:
        raise MinorityError(f"Could not load a pixel-space UNet2DModel from {location!r}: {str(err).splitlines()[0]}") from err
    null = (index or {}).get("null_class_label")
    comps = Components(family="pixel", unet=unet, scheduler=scheduler, name=name, source="folder",
                       null_class_label=None if null is None else int(null),
                       model_defaults=dict((index or {}).get("minority_defaults", {})),
                       low_res_conditioning=(index or {}).get("low_res_conditioning"))
    return comps.to(device=device, dtype=dtype).freeze()


def components_from_pipe(pipe) -> Components:
    """Wrap an existing diffusers ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` (shares its modules)."""
    from diffusers import DDIMScheduler

    xl = getattr(pipe, "text_encoder_2", None) is not None
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if xl else [])
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if xl else [])
    sched = pipe.scheduler
    if not isinstance(sched, DDIMScheduler):
        sched = DDIMScheduler.from_config(sched.config)
    comps = Components(
        family="sdxl" if xl else "sd", unet=pipe.unet, scheduler=sched, vae=pipe.vae, tokenizers=tokenizers,
        text_encoders=encoders, name=getattr(pipe, "name_or_path", "") or type(pipe).__name__,
        force_zeros_for_empty_prompt=bool(getattr(pipe.config, "force_zeros_for_empty_prompt", xl)), source="pipe",
    )
    return comps.freeze()
