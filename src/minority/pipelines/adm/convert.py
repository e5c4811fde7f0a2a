"""Convert a guided-diffusion (ADM) checkpoint into a diffusers pixel-model folder (SPEC §3.7).

    minority convert adm 64x64_diffusion.pt --out models/imagenet64 --preset imagenet64

writes ``FOLDER/model_index.json`` (``DDPMPipeline``; the ``--flags`` and the source recorded under ``adm``),
``FOLDER/unet`` (``UNet2DModel`` or :class:`minority.nets.adm.ADMUNet2DModel`, safetensors) and
``FOLDER/scheduler`` (``DDPMScheduler`` with the checkpoint's own β table as ``trained_betas``,
``variance_type="learned_range"`` for ``learn_sigma``, else guided-diffusion's ``fixed_large``; ẑ0 clipped to
[−1, 1] as its samplers' ``clip_denoised``). Super-resolution checkpoints (``--large_size``) also record
``low_res_conditioning``: the low-resolution image, bilinearly upsampled, is concatenated to z_t.

The ``.pt`` is read only with ``torch.load(weights_only=True)``; every checkpoint tensor must be consumed
exactly once and have the shape the flags imply, else a one-line MinorityError names the first that does not.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch

from minority.errors import MinorityError
from minority.nets.adm import ADMUNet2DModel
from minority.pipelines.adm.flags import ADMFlags, adm_betas
from minority.pipelines.adm.layout import Entry, layout, unet_config

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a guided-diffusion ``.pt`` (``torch.load(weights_only=True)``: no unpickling of
    arbitrary objects); a top-level ``state_dict``/``model`` dict and a ``module.`` prefix are unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MinorityError(f"Checkpoint {str(path)!r} does not exist: pass the guided-diffusion .pt file.")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise MinorityError(f"{path.name} holds Python objects besides tensors, which weights-only loading refuses to "
                            f"unpickle ({first[:160]}): save a plain state dict (torch.save(model.state_dict(), ...)).") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise MinorityError(f"{path.name} is not a readable PyTorch checkpoint ({str(err).splitlines()[0][:160]}).") from err
    for key in ("state_dict", "model", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and not isinstance(obj.get(key), torch.Tensor):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MinorityError(f"{path.name} is not a state dict of tensors (found {type(obj).__name__}): "
                            "pass guided-diffusion's model .pt (a UNetModel state dict).")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def target_model(f: ADMFlags) -> torch.nn.Module:
    """The diffusers model the flags describe, on the meta device (shapes only)."""
    from diffusers import UNet2DModel

    name, cfg = unet_config(f)
    cls = ADMUNet2DModel if name == "ADMUNet2DModel" else UNet2DModel
    with torch.device("meta"):
        return cls(**cfg)


def _shape(s) -> str:
    return "(" + ", ".join(str(int(d)) for d in s) + ")"


def expected_shape(e: Entry, target: dict[str, torch.Size]) -> tuple[int, ...]:
    """The shape guided-diffusion gives tensor ``e.src`` for these flags."""
    name, op = e.dst[0]
    shape = tuple(target[name])
    if op == "conv1d":
        return (*shape, 1)
    if op in "qkv":
        return (3 * shape[0], *shape[1:], 1) if len(shape) == 2 else (3 * shape[0],)
    return shape


def _split_qkv(t: torch.Tensor, e: Entry) -> dict[str, torch.Tensor]:
    """q, k, v of a qkv conv tensor ``(3C, C_in, 1)`` / ``(3C,)`` in diffusers' head-major order."""
    three_c = t.shape[0]
    c = three_c // 3
    flat = t.reshape(three_c, -1)
    if e.legacy:  # rows h·3c' + s·c' + d
        parts = flat.reshape(e.heads, 3, c // e.heads, -1)
        qkv = [parts[:, s].reshape(c, -1) for s in range(3)]
    else:  # rows s·C + h·c' + d
        qkv = list(flat.reshape(3, c, -1).unbind(0))
    out = {}
    for (name, _), part in zip(e.dst, qkv):
        out[name] = part.reshape(c, *t.shape[1:-1]) if t.dim() == 3 else part.reshape(c)
    return out


def convert_state_dict(state: dict[str, torch.Tensor], f: ADMFlags, dtype: torch.dtype = torch.float32,
                       target: dict[str, torch.Size] | None = None) -> dict[str, torch.Tensor]:
    """guided-diffusion state dict -> diffusers state dict (tensors cast to ``dtype``, contiguous).

    Raises a one-line MinorityError at the first checkpoint tensor (in checkpoint order) the flags do not
    imply or whose shape differs, then for any implied tensor the checkpoint lacks."""
    if target is None:
        target = {k: v.shape for k, v in target_model(f).state_dict().items()}
    entries = layout(f, set(target))
    filled = [name for e in entries for name, _ in e.dst]
    if sorted(filled) != sorted(target):  # the layout must fill each diffusers tensor exactly once
        raise AssertionError(f"ADM layout mismatch: {sorted(set(target) ^ set(filled))[:5]}")
    by_src = {e.src: e for e in entries}
    hint = "check --flags (num_channels, num_res_blocks, channel_mult, attention_resolutions, class_cond, learn_sigma, ...)"
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        e = by_src.get(key)
        if e is None:
            raise MinorityError(f"Checkpoint tensor {key} {_shape(value.shape)} is not part of the model these flags "
                                f"describe: {hint}.")
        want = expected_shape(e, target)
        if tuple(value.shape) != want:
            raise MinorityError(f"Checkpoint tensor {key}: the flags imply shape {_shape(want)}, the checkpoint has "
                                f"{_shape(value.shape)}: {hint}.")
        parts = _split_qkv(value, e) if e.dst[0][1] in "qkv" else {e.dst[0][0]: value.reshape(target[e.dst[0][0]])}
        out.update({k: v.to(dtype).contiguous() for k, v in parts.items()})
    missing = [e.src for e in entries if e.src not in state]
    if missing:
        raise MinorityError(f"The checkpoint lacks {len(missing)} tensor(s) these flags imply, first {missing[0]} "
                            f"{_shape(expected_shape(by_src[missing[0]], target))}: {hint}.")
    return out


def scheduler_config(f: ADMFlags) -> dict:
    """``DDPMScheduler`` arguments: the exact β table (as ``trained_betas``), variance and prediction type."""
    return dict(num_train_timesteps=f.diffusion_steps, trained_betas=adm_betas(f.noise_schedule, f.diffusion_steps).tolist(),
                variance_type="learned_range" if f.learn_sigma else "fixed_large", clip_sample=True,
                clip_sample_range=1.0, prediction_type="sample" if f.predict_xstart else "epsilon")


def respaced_steps(respacing: str) -> int | None:
    """Sampling steps of guided-diffusion's ``--timestep_respacing`` (``"250"``, ``"ddim50"``); None otherwise."""
    r = respacing.strip().removeprefix("ddim")
    return int(r) if r.isdigit() else None


def model_index(f: ADMFlags, unet_class: str, source: str) -> dict:
    """``model_index.json`` in the project's pixel-model conventions (``DDPMPipeline``, ``minority_defaults``)."""
    from diffusers import __version__

    library = "minority.nets.adm" if unet_class == "ADMUNet2DModel" else "diffusers"
    defaults: dict = {"guidance": 1.0}
    steps = respaced_steps(f.timestep_respacing)
    if steps:
        defaults["steps"] = steps
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": __version__,
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": [library, unet_class],
             "minority_defaults": defaults, "adm": {"flags": f.to_dict(), "source": source}}
    if f.super_res:
        index["low_res_conditioning"] = {"channels": 3, "size": f.small_size, "interpolation": "bilinear"}
    return index


def convert_adm(checkpoint: str | Path, out: str | Path, flags: ADMFlags, dtype: str = "float32",
                overwrite: bool = False) -> Path:
    """Convert ``checkpoint`` (guided-diffusion ``.pt``) with ``flags`` into the diffusers folder ``out``."""
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise MinorityError(f"--dtype {dtype!r}: choose float32, float16 or bfloat16.")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MinorityError(f"--out {out} exists and is not empty: choose a new folder (or pass --overwrite).")
    model = target_model(flags)
    state = convert_state_dict(load_checkpoint(checkpoint), flags, DTYPES[dtype],
                               {k: v.shape for k, v in model.state_dict().items()})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "unet").mkdir(parents=True)
    model.save_config(tmp / "unet")
    save_file(state, str(tmp / "unet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    DDPMScheduler(**scheduler_config(flags)).save_pretrained(tmp / "scheduler")
    index = model_index(flags, type(model).__name__, Path(checkpoint).name)
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def alphas_cumprod64(f: ADMFlags) -> np.ndarray:
    """ᾱ_t = Π_{s≤t} (1 − β_s) in float64, as guided-diffusion computes it."""
    return np.cumprod(1.0 - adm_betas(f.noise_schedule, f.diffusion_steps))
