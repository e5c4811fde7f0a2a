"""Single-file Stable Diffusion checkpoints: one ``.safetensors`` in the original (LDM / A1111) layout.

Most community SD 1.x / 2.x / SDXL models ship as one file (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*`` / ``conditioner.embedders.*``). diffusers' ``from_single_file`` converts such a file into
pipeline modules, but it needs the diffusers configuration of the base model (layer sizes, scheduler, tokenizer).
``--config FOLDER_OR_ID`` names it: a local diffusers folder or a hub id (read from the local hub cache while the
hub is unreachable). Without ``--config``, diffusers' own guess of the base model (from the checkpoint's keys) is
used if the hub or its cache has that base model's configuration; otherwise a one-line error says to pass
``--config``. diffusers, left alone, would try to download it even with ``local_files_only`` and retry offline.

Only safetensors are read (a ``.ckpt`` is refused before this module is reached): nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minority.errors import MinorityError

#: base pipelines a single file can be loaded into, and the project's family name for each.
SINGLE_FILE_PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}


def read_safetensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The state dict of ``path`` (memory-mapped), or a one-line error for a file that is not valid safetensors."""
    from safetensors.torch import load_file  # lazy: only single-file checkpoints need it

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 -- safetensors raises several types for a torn / foreign file
        raise MinorityError(f"{name} is not a readable safetensors file ({str(err).splitlines()[0][:120]}): "
                            "re-download or re-export it.") from err


def _index_of(config: str, offline: bool) -> dict:
    """``model_index.json`` of ``--config`` (a local diffusers folder or a hub id)."""
    folder = Path(config).expanduser()
    if folder.is_dir():
        path = folder / "model_index.json"
        if not path.is_file():
            raise MinorityError(f"--config {config} has no model_index.json: pass the diffusers folder (or hub id) of "
                                "the checkpoint's base model.")
        return json.loads(path.read_text())
    from huggingface_hub import hf_hub_download  # lazy: only hub ids need the hub client

    try:
        return json.loads(Path(hf_hub_download(config, "model_index.json", local_files_only=offline)).read_text())
    except Exception as err:  # noqa: BLE001 -- offline, unknown repo, gated repo, ...
        where = "the local hub cache (the hub is unreachable)" if offline else "the Hugging Face hub"
        raise MinorityError(f"--config {config!r} is neither a local diffusers folder nor in {where} "
                            f"({type(err).__name__}): pass the diffusers folder of the checkpoint's base model.") from err


def _guess_base(checkpoint: dict, name: str, offline: bool) -> str:
    """diffusers' guess of the base model's hub id for ``checkpoint``, usable only if its config can be read."""
    from diffusers.loaders.single_file_utils import (  # lazy: heavy
        fetch_diffusers_config,
        infer_diffusers_model_type,
    )

    model_type = infer_diffusers_model_type(checkpoint)
    repo = fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"]
    if offline:
        from huggingface_hub import try_to_load_from_cache  # lazy: only hub ids need the hub client

        if not isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
            raise MinorityError(
                f"{name} is a single-file checkpoint (diffusers reads it as {model_type!r}, base model {repo}) and the "
                f"hub is unreachable with no cached copy of {repo}'s configuration: pass --config FOLDER_OR_ID, the "
                "diffusers folder (or cached hub id) of its base model.")
    return repo


def load_single_file(path: Path, name: str, config: str | None, offline: bool, dtype: torch.dtype):
    """Load a single-file SD / SDXL checkpoint into a diffusers pipeline.

    Args:
        path: the ``.safetensors`` file.
        name: the ``--model`` value (for messages).
        config: ``--config``: diffusers folder or hub id of the base model; None = diffusers' guess.
        offline: the hub is unreachable (read hub ids from the local cache only).
        dtype: parameter dtype.
    Returns:
        ``(pipe, family, index)``: a ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``, ``"sd"`` or
        ``"sdxl"``, and the base model's ``model_index.json``.
    """
    import diffusers  # lazy: heavy, loaded on use

    checkpoint = read_safetensors(path, name)
    if not any(k.startswith("model.diffusion_model.") for k in checkpoint):
        raise MinorityError(f"{name} holds no Stable Diffusion UNet (no model.diffusion_model.* tensors): single-file "
                            "loading covers SD 1.x / 2.x / SDXL checkpoints; pass a diffusers folder for other models.")
    base = config if config is not None else _guess_base(checkpoint, name, offline)
    local = Path(base).expanduser().is_dir()  # a folder --config never needs the hub
    index = _index_of(base, offline and not local)
    cls = index.get("_class_name", "")
    if cls not in SINGLE_FILE_PIPELINES:
        raise MinorityError(f"--config {base} is a {cls or 'non-pipeline folder'}: single-file checkpoints load into "
                            f"{' or '.join(SINGLE_FILE_PIPELINES)} base models (SD 1.x / 2.x / SDXL).")
    try:
        pipe = getattr(diffusers, cls).from_single_file(
            str(path), config=str(Path(base).expanduser()) if local else base, torch_dtype=dtype,
            local_files_only=offline and not local,
            **({"safety_checker": None, "requires_safety_checker": False} if cls == "StableDiffusionPipeline" else {}))
    except MinorityError:
        raise
    except Exception as err:  # noqa: BLE001 -- diffusers raises many types for a checkpoint that does not fit
        raise MinorityError(f"Could not load {name} with the configuration of {base} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:160]}): is --config the checkpoint's base model?") from err
    return pipe, SINGLE_FILE_PIPELINES[cls], index
