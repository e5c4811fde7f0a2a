"""guided-diffusion's command-line flags (``MODEL_FLAGS`` / ``DIFFUSION_FLAGS``), parsed as its scripts do, and
the diffusers configuration they imply (SPEC §3.7).

guided-diffusion adds one ``--name value`` option per key of ``model_and_diffusion_defaults()`` (booleans as
``True/False/yes/no/1/0``; argparse prefixes allowed); its super-resolution scripts use
``sr_model_and_diffusion_defaults()`` (``--large_size``/``--small_size`` instead of ``--image_size``, no
``--channel_mult`` or ``--use_new_attention_order``). The defaults below are those functions' values.
"""

from __future__ import annotations

import argparse
import math
import shlex
from dataclasses import dataclass, fields

import numpy as np

from minority.errors import MinorityError

NUM_CLASSES = 1000  # guided-diffusion's class-conditional models are ImageNet's

DIFFUSION_DEFAULTS = dict(learn_sigma=False, diffusion_steps=1000, noise_schedule="linear", timestep_respacing="",
                          use_kl=False, predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False)
MODEL_DEFAULTS = dict(image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
                      num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0,
                      class_cond=False, use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False,
                      use_fp16=False, use_new_attention_order=False)
SR_ONLY = dict(large_size=256, small_size=64)
NOT_IN_SR = ("image_size", "channel_mult", "use_new_attention_order")
# flags of guided-diffusion's sampling scripts that say nothing about the checkpoint (accepted and ignored)
SAMPLING_FLAGS = dict(clip_denoised=True, num_samples=10000, batch_size=16, use_ddim=False, model_path="",
                      base_samples="", classifier_scale=1.0, classifier_path="")

_FLAGS = {
    "celeba64": "--diffusion_steps 1000 --noise_schedule cosine --image_size 64 --class_cond False --num_channels 192 "
                "--num_head_channels 64 --num_res_blocks 3 --attention_resolutions 32,16,8 --resblock_updown True "
                "--use_new_attention_order True --learn_sigma True --dropout 0.1 --use_scale_shift_norm True "
                "--use_fp16 True",
    "imagenet64": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
                  "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 "
                  "--num_res_blocks 3 --resblock_updown True --use_new_attention_order True --use_fp16 True "
                  "--use_scale_shift_norm True",
    "lsun-bedroom256": "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.1 "
                       "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
                       "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
                       "--use_scale_shift_norm True",
    "imagenet64-256-upsampler": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 "
                                "--large_size 256 --small_size 64 --learn_sigma True --noise_schedule linear "
                                "--num_channels 192 --num_heads 4 --num_res_blocks 2 --resblock_updown True "
                                "--use_fp16 True --use_scale_shift_norm True",
}
PRESETS: dict[str, str] = dict(_FLAGS)  # the SGMS paper's checkpoints (SPEC §3.7), flags as published
PRESET_CHECKPOINTS = {  # file names as their authors publish them
    "celeba64": "the SGMS authors' CelebA-64 model (github.com/soobin-um/sg-minority)",
    "imagenet64": "64x64_diffusion.pt (openai/guided-diffusion)",
    "lsun-bedroom256": "lsun_bedroom.pt (openai/guided-diffusion)",
    "imagenet64-256-upsampler": "64_256_upsampler.pt (openai/guided-diffusion)",
}


@dataclass(frozen=True)
class ADMFlags:
    """The parsed flags of one guided-diffusion model (its ``UNetModel`` or ``SuperResModel`` and diffusion)."""

    image_size: int
    num_channels: int
    num_res_blocks: int
    num_heads: int
    num_heads_upsample: int
    num_head_channels: int
    attention_resolutions: str
    channel_mult: str
    dropout: float
    class_cond: bool
    use_scale_shift_norm: bool
    resblock_updown: bool
    use_fp16: bool
    use_new_attention_order: bool
    learn_sigma: bool
    diffusion_steps: int
    noise_schedule: str
    timestep_respacing: str
    predict_xstart: bool
    rescale_timesteps: bool
    super_res: bool = False
    small_size: int | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def mults(self) -> tuple[float, ...]:
        """``channel_mult``: given, or guided-diffusion's default for the image size."""
        if self.channel_mult:
            return tuple(float(m) for m in self.channel_mult.split(","))
        table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if self.super_res:
            table = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}
        if self.image_size not in table:
            raise MinorityError(f"guided-diffusion has no default channel_mult for image size {self.image_size}: "
                                "add --channel_mult (e.g. 1,2,2,4).")
        return tuple(float(m) for m in table[self.image_size])

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsampling rates with attention: image_size // r for each r of ``attention_resolutions``."""
        return tuple(self.image_size // int(r) for r in self.attention_resolutions.split(","))


def str2bool(v: str) -> bool:
    """guided-diffusion's boolean flag values."""
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("boolean value expected")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit
        raise MinorityError(f"--flags: {message} (guided-diffusion flags, e.g. \"--image_size 64 --num_channels 192\").")


def _parser(defaults: dict) -> _Parser:
    p = _Parser(prog="guided-diffusion", add_help=False)
    for k, v in defaults.items():
        kind = str2bool if isinstance(v, bool) else type(v)
        p.add_argument(f"--{k}", default=v, type=kind)
    return p


def parse_flags(text: str) -> ADMFlags:
    """Parse a guided-diffusion flags string (MODEL_FLAGS, DIFFUSION_FLAGS, optionally SAMPLE_FLAGS) as its
    ``image_sample.py`` / ``super_res_sample.py`` argparse does; raises a one-line MinorityError on bad input."""
    try:
        argv = shlex.split(text)
    except ValueError as err:
        raise MinorityError(f"--flags could not be split into words: {err}.") from err
    names = {a.split("=", 1)[0].lstrip("-") for a in argv if a.startswith("--")}
    super_res = bool(names & {"large_size", "small_size"})
    model = {k: v for k, v in MODEL_DEFAULTS.items() if not (super_res and k in NOT_IN_SR)}
    defaults = {**model, **DIFFUSION_DEFAULTS, **(SR_ONLY if super_res else {}), **SAMPLING_FLAGS}
    a = vars(_parser(defaults).parse_args(argv))
    if super_res:
        a["image_size"], a["channel_mult"], a["use_new_attention_order"] = a.pop("large_size"), "", False
    small = a.pop("small_size", None)
    for k in SAMPLING_FLAGS:
        a.pop(k)
    for k in ("use_checkpoint", "use_kl", "rescale_learned_sigmas"):  # training-only switches
        a.pop(k)
    flags = ADMFlags(**a, super_res=super_res, small_size=small)
    check_flags(flags)
    return flags


def check_flags(f: ADMFlags) -> None:
    """What the converter cannot express exactly, refused with the reason."""
    if f.noise_schedule not in ("linear", "cosine"):
        raise MinorityError(f"--noise_schedule {f.noise_schedule!r}: guided-diffusion knows linear and cosine.")
    if f.rescale_timesteps and f.diffusion_steps != 1000:
        raise MinorityError("--rescale_timesteps True with diffusion_steps != 1000 feeds the network t·1000/T: "
                            "not supported (diffusers UNets take the integer timestep).")
    mults = f.mults
    if any(m != int(m) for m in mults) or mults[0] != 1:
        raise MinorityError(f"channel_mult {','.join(f'{m:g}' for m in mults)}: the converter needs integer "
                            "multipliers starting at 1 (UNet2DModel's time embedding width is its first block's).")
    if f.num_channels % 32:
        raise MinorityError(f"--num_channels {f.num_channels}: guided-diffusion's GroupNorm32 needs a multiple of 32.")
    for r in f.attention_resolutions.split(","):
        if not r.strip().isdigit() or int(r) <= 0:
            raise MinorityError(f"--attention_resolutions {f.attention_resolutions!r}: expected integers like 32,16,8.")


def parse_preset_or_flags(preset: str | None, flags: str | None) -> ADMFlags:
    """``--preset NAME`` (the paper's flags) or ``--flags "..."`` (exactly one of them)."""
    if (preset is None) == (flags is None):
        raise MinorityError("Give exactly one of --preset (" + ", ".join(PRESETS) + ") or --flags \"...\".")
    if preset is not None:
        if preset not in PRESETS:
            raise MinorityError(f"Unknown --preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        return parse_flags(PRESETS[preset])
    return parse_flags(flags)


def adm_betas(schedule: str, steps: int) -> np.ndarray:
    """β_1..β_T (float64) as guided-diffusion's ``get_named_beta_schedule``: ``linear`` from 0.1/T to 20/T
    (β_start = 1e-4, β_end = 0.02 scaled by 1000/T); ``cosine`` (Nichol & Dhariwal 2021)
    β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999) with ᾱ(s) = cos²((s + 0.008)/1.008 · π/2)."""
    if schedule == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if schedule == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - abar((i + 1) / steps) / abar(i / steps), 0.999) for i in range(steps)], dtype=np.float64)
    raise MinorityError(f"Unknown noise schedule {schedule!r}: expected linear or cosine.")
