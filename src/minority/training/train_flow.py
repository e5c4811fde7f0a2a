"""``minority train fashion-flow``: a small SD3 (MMDiT, rectified flow) on ``fashion-sd``'s latents and text encoder.

One resumable phase (see :class:`.common.Run`): the training images are encoded once by ``fashion-sd``'s frozen
VAE (posterior mean and log-variance cached in ``run/latents.safetensors``; SD3's ``shift_factor`` and
``scaling_factor`` set to the latents' mean and 1/std), the captions (:mod:`minority.data.captions`, ``empty_fraction``
empty for classifier-free guidance) by its frozen CLIP encoder through the same
:class:`minority.core.flow_text.FlowPromptEncoder` that samples (cached per caption). The transformer learns the
rectified-flow velocity (SD3, Esser et al. 2024, eq. 2–3):

    x_σ = (1 − σ)·x₀ + σ·ε,   v_θ(x_σ, σ·1000, c) ≈ ε − x₀,   σ ~ logit-normal(m, s),

and the exported ``StableDiffusion3Pipeline`` folder samples with diffusers' ``FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minority.core.flow_text import FlowPromptEncoder
from minority.data import make_captions
from minority.embedded import resolve_embedded
from minority.errors import MinorityError
from minority.training.checkpoint import start_training
from minority.training.common import EMA, batch_indices, update_model_index, warmup_cosine
from minority.training.flow_models import (
    FlowArchConfig,
    build_scheduler,
    build_transformer,
    projected_text_encoder,
    save_sd3_pipeline,
    write_tokenizer,
)
from minority.training.provenance import finish_export
from minority.training.train_sd import encode_dataset, sample_alignment


@dataclass(frozen=True)
class FlowTrainConfig:
    """Hyper-parameters of ``minority train fashion-flow`` (written as ``config.json``)."""

    seed: int = 0
    base: str = "fashion-sd"  # where the frozen VAE and CLIP text encoder come from (embedded name or folder)
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 200
    ema_decay: float = 0.999
    empty_fraction: float = 0.1
    weight_decay: float = 1e-2
    logit_mean: float = 0.0  # σ ~ logit-normal(logit_mean, logit_std), SD3's default (0, 1)
    logit_std: float = 1.0
    shift: float = 1.0  # the sampling scheduler's σ shift
    arch: FlowArchConfig = field(default_factory=FlowArchConfig)
    train_limit: int | None = None  # first N training images only (tests)
    eval_images_per_class: int = 10
    eval_steps: int = 28
    eval_guidance: float = 3.0


def tiny_config(seed: int = 0) -> FlowTrainConfig:
    """Seconds-long configuration for smoke tests (the real ``fashion-sd`` VAE and text encoder, a tiny MMDiT)."""
    return FlowTrainConfig(seed=seed, steps=3, batch_size=8, warmup=1, arch=FlowArchConfig(width=32, head_dim=16, layers=1),
                           train_limit=64, eval_images_per_class=1, eval_steps=2)


def _base_folder(base: str) -> Path:
    folder = resolve_embedded(base) or Path(base)
    if not (folder / "vae").is_dir() or not (folder / "text_encoder").is_dir():
        raise MinorityError(f"fashion-flow needs the VAE and text encoder of {base!r}, which is not a fashion-sd "
                            "folder: reinstall minority (it ships fashion-sd) or pass the folder of one.")
    return folder


class CaptionConditioning:
    """SD3 conditioning per caption, cached: embeds ``(L, 2·D)`` and pooled ``(2·D,)``, exactly as sampling builds them."""

    def __init__(self, encoder: FlowPromptEncoder) -> None:
        self.encoder, self.cache = encoder, {}

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            cond = self.encoder.encode_ids(self.encoder.tokenize(missing, warn=False))
            self.cache.update({c: (e, p) for c, e, p in zip(missing, cond.embeds, cond.pooled)})
        return (torch.stack([self.cache[c][0] for c in captions]), torch.stack([self.cache[c][1] for c in captions]))


def train_flow(config: FlowTrainConfig, run_dir: str | Path, *, data_dir: str | Path | None = None,
               resume: bool = False, device: str = "auto", checkpoint_minutes: float = 5.0,
               max_minutes: float | None = None, export_dir: str | Path | None = None, log_every: int = 25,
               export_only: bool = False) -> Path | None:
    """Train and export a ``StableDiffusion3Pipeline`` folder to ``export_dir`` (default ``run/fashion-flow``).

    Returns the export folder, or None when stopped by ``max_minutes`` (continue with ``resume=True``).
    """
    # long: the training loop (setup, latent cache, resume, steps, EMA, checkpoint, export) read top to bottom
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    dev, data, x_train, y_train, run = start_training(
        config, run_dir, data_dir=data_dir, device=device, resume=resume, checkpoint_minutes=checkpoint_minutes,
        max_minutes=max_minutes, log_every=log_every, export_only=export_only)
    base = _base_folder(config.base)
    arch = config.arch
    vae = AutoencoderKL.from_pretrained(str(base / "vae"), torch_dtype=torch.float32).to(dev).eval().requires_grad_(False)
    text_encoder = projected_text_encoder(base).to(dev)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tokenizer(run.dir / "tokenizer", arch.text_length)))
    encoder = FlowPromptEncoder("sd3", [tokenizer, tokenizer], [text_encoder, text_encoder],
                                max_sequence_length=arch.max_sequence_length, joint_dim=2 * text_encoder.config.hidden_size)
    net = run.add_module("transformer", build_transformer(arch, text_encoder.config.hidden_size).to(dev))
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, config.steps, config.warmup, 0.1))
    run.add_optimizer("transformer", opt, sched)
    ema = run.add_ema("transformer", EMA(net, config.ema_decay))
    gen = run.add_generator("noise", torch.Generator().manual_seed(config.seed))
    if resume:
        run.load()
    run.log(f"fashion-flow on {dev}: transformer {sum(p.numel() for p in net.parameters())} parameters "
            f"(width {arch.width}, {arch.layers} layers); {len(x_train)} training images; base {base}")

    cache = run.dir / "latents.safetensors"
    if cache.is_file():
        lat = load_file(str(cache))
    else:
        run.log("encoding the training set into latents")
        mean, logvar = encode_dataset(vae, x_train, dev)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=torch.Generator().manual_seed(config.seed))
        lat = {"mean": mean.contiguous(), "logvar": logvar.contiguous(),
               "shift_factor": z.mean().reshape(1), "scaling_factor": (1.0 / z.std()).reshape(1)}
        save_file(lat, str(cache))
    shift, scaling = float(lat["shift_factor"]), float(lat["scaling_factor"])
    vae.register_to_config(shift_factor=shift, scaling_factor=scaling)
    lat_mean, lat_std = lat["mean"], (0.5 * lat["logvar"]).exp()
    cond = CaptionConditioning(encoder)

    def step_fn(step: int) -> dict[str, float]:
        idx = batch_indices(len(lat_mean), config.batch_size, config.seed + 1, step)
        z = lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)
        x0 = ((z - shift) * scaling).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        sigma = torch.sigmoid(config.logit_mean + config.logit_std * torch.randn(len(idx), generator=gen)).to(dev)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        captions = _captions(y_train[idx].tolist(), config, step)
        embeds, pooled = cond(captions)
        v = net(xt, encoder_hidden_states=embeds.to(dev), pooled_projections=pooled.to(dev), timestep=sigma * 1000).sample
        loss = F.mse_loss(v, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(net)
        return {"loss": loss.item()}

    net.train()
    done = run.loop("transformer", config.steps, step_fn)
    run.plot_losses()
    if not done:
        run.close()
        return None

    ema.copy_to(net)
    out = Path(export_dir) if export_dir is not None else run.dir / "fashion-flow"
    if out.exists():
        shutil.rmtree(out)
    save_sd3_pipeline(out, net.eval(), vae, text_encoder, build_scheduler(config.shift), arch.text_length)
    update_model_index(out, minority_defaults={"guidance": config.eval_guidance,
                                               "max_sequence_length": arch.max_sequence_length})
    metrics: dict[str, float | int | None] = {"latent_shift_factor": shift, "latent_scaling_factor": scaling,
                                             "final_loss": run.state["history"]["transformer"][-1][1]}
    align = sample_alignment(out, config.eval_images_per_class, config.eval_steps, config.eval_guidance,
                             config.seed, dev, grid_path=run.dir / "samples.png")
    if align:
        metrics.update(align)
    return finish_export(run, out, name="fashion-flow", config=config, data_root=data.root, metrics=metrics,
                         phases=("transformer",))


def _captions(labels: list[int], config: FlowTrainConfig, step: int) -> list[str]:
    return make_captions(labels, seed=config.seed * 1_000_003 + step, empty_fraction=config.empty_fraction)
