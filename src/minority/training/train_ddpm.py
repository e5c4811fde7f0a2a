"""``minority train fashion-ddpm``: class-conditional pixel-space DDPM on 32×32 gray Fashion-MNIST.

``UNet2DModel`` with ``num_class_embeds = 11`` (label 10 = unconditional, used for a ``class_dropout``
share of the batch so both conditional and unconditional sampling work), cosine noise schedule,
ε-prediction and learned variance (``learned_range``, hybrid loss MSE + VLB), EMA weights. Exported as
a diffusers ``DDPMPipeline`` folder (``unet/`` + ``scheduler/``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minority.core.denoiser import renoise, to_eps_x0, training_target
from minority.embedded import resolve_embedded
from minority.errors import MinorityError
from minority.nets.fashion_classifier import load_classifier
from minority.pipelines.pixel import PixelPipeline
from minority.training.checkpoint import start_training
from minority.training.common import (
    EMA,
    batch_indices,
    random_shift_flip,
    save_grid,
    update_model_index,
    warmup_cosine,
)
from minority.training.diffusion_losses import PosteriorTerms
from minority.training.provenance import finish_export

NULL_CLASS = 10


@dataclass(frozen=True)
class DDPMTrainConfig:
    """Hyper-parameters of ``minority train fashion-ddpm`` (written as ``config.json``)."""

    seed: int = 0
    steps: int = 2600  # the shipped model: ~1.5 h on one CPU thread; minutes on a GPU
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    class_dropout: float = 0.1
    learned_variance: bool = True
    vlb_weight: float = 1.0  # IDDPM's λ·T = 0.001·1000 with per-dim bits
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    flip: bool = True
    channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 1
    norm_groups: int = 8
    attention_head_dim: int = 32
    train_limit: int | None = None
    eval_images_per_class: int = 10
    eval_steps: int = 100
    eval_guidance: float = 1.0  # the exported folder's default guidance for class-conditional sampling
    init_from: str | None = None  # a fashion-ddpm folder whose UNet weights start the run (train the shipped model on)


def tiny_config(seed: int = 0) -> DDPMTrainConfig:
    """Seconds-long configuration for smoke tests."""
    return DDPMTrainConfig(seed=seed, steps=3, batch_size=8, warmup=1, channels=(8, 16), attention_levels=(False, True),
                           norm_groups=4, attention_head_dim=8, train_limit=64, eval_images_per_class=1, eval_steps=2)


def build_ddpm_unet(cfg: DDPMTrainConfig):
    """``UNet2DModel``: ``(B, 1, 32, 32)``, timesteps ``(B,)``, class labels ``(B,)`` in 0..10 ->
    ``(B, 2, 32, 32)`` (ε and the variance interpolation) or ``(B, 1, 32, 32)`` without learned variance."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=2 if cfg.learned_variance else 1, down_block_types=down,
        up_block_types=up, block_out_channels=cfg.channels, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_groups, attention_head_dim=cfg.attention_head_dim, num_class_embeds=NULL_CLASS + 1,
    )


def build_ddpm_scheduler(cfg: DDPMTrainConfig):
    """``DDPMScheduler`` with 1000 steps, the configured schedule/prediction and variance type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=True,
                         variance_type="learned_range" if cfg.learned_variance else "fixed_small")


def ddpm_alignment(folder: Path, images_per_class: int, steps: int, seed: int, device: torch.device,
                   grid_path: Path | None = None) -> dict[str, float] | None:
    """Classifier accuracy of class-conditional samples of the exported model ``folder`` (None without the
    embedded classifier), drawn by the library's own ancestral sampler at guidance 1 (image i seeded
    ``seed + i``); the samples as a grid (one row per class) to ``grid_path``."""
    labels = torch.arange(10).repeat_interleave(images_per_class)
    pipe = PixelPipeline.from_pretrained(str(folder), device=device)
    x = pipe(class_labels=labels.tolist(), num_inference_steps=steps, guidance_scale=1.0, method="ancestral",
             seeds=[seed + i for i in range(len(labels))], output_type="pt").images * 2 - 1  # (B, 1, 32, 32)
    if grid_path is not None:
        save_grid(x, grid_path, nrow=images_per_class)
    clf_dir = resolve_embedded("fashion-classifier")
    if clf_dir is None:
        return None
    clf = load_classifier(clf_dir, device)
    acc = float((clf(x.to(device)).argmax(1).cpu() == labels).float().mean())
    return {"class_accuracy_guidance_1": acc, "eval_steps": steps, "eval_samples": len(labels)}


def load_init_weights(unet, folder: str | Path) -> None:
    """Start from the UNet of an exported ``fashion-ddpm`` folder (e.g. the shipped one: its EMA weights, fp16 stored);
    the architecture must match the config (strict load)."""
    from diffusers import UNet2DModel

    path = Path(folder)
    if not (path / "unet").is_dir():
        raise MinorityError(f"--init-from {folder}: no unet/ folder there; pass a fashion-ddpm model folder.")
    src = UNet2DModel.from_pretrained(str(path), subfolder="unet", torch_dtype=torch.float32)
    try:
        unet.load_state_dict(src.state_dict())
    except RuntimeError as err:
        raise MinorityError(f"--init-from {folder}: its UNet does not match this recipe's architecture "
                            f"({str(err).splitlines()[0]}).") from err


def train_ddpm(config: DDPMTrainConfig, run_dir: str | Path, *, data_dir: str | Path | None = None,
               resume: bool = False, device: str = "auto", checkpoint_minutes: float = 5.0,
               max_minutes: float | None = None, export_dir: str | Path | None = None,
               log_every: int = 25, export_only: bool = False) -> Path | None:
    """Train and export a ``DDPMPipeline`` folder to ``export_dir`` (default ``run/fashion-ddpm``).

    Returns the export folder, or None when stopped by ``max_minutes`` (continue with ``resume=True``).
    """
    # long: the training loop (setup, resume, steps, EMA, checkpoint, preview, export) read top to bottom
    from diffusers import DDPMPipeline

    dev, data, x_train, y_train, run = start_training(
        config, run_dir, data_dir=data_dir, device=device, resume=resume, checkpoint_minutes=checkpoint_minutes,
        max_minutes=max_minutes, log_every=log_every, export_only=export_only)
    unet = run.add_module("unet", build_ddpm_unet(config).to(dev))
    if config.init_from and not resume:
        load_init_weights(unet, config.init_from)
    scheduler = build_ddpm_scheduler(config)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, config.steps, config.warmup, 0.1))
    run.add_optimizer("unet", opt, sched)
    ema = run.add_ema("unet", EMA(unet, config.ema_decay))
    gen = run.add_generator("noise", torch.Generator().manual_seed(config.seed))
    if resume:
        run.load()
    run.log(f"fashion-ddpm on {dev}: {sum(p.numel() for p in unet.parameters())} parameters; "
            f"{len(x_train)} training images")
    terms = PosteriorTerms(scheduler.alphas_cumprod)
    alphas = scheduler.alphas_cumprod.to(dev)
    n_t = scheduler.config.num_train_timesteps

    def step_fn(step: int) -> dict[str, float]:
        idx = batch_indices(len(x_train), config.batch_size, config.seed, step)
        x0 = random_shift_flip(x_train[idx], gen, max_shift=0, flip=True) if config.flip else x_train[idx]
        labels = y_train[idx].clone()
        labels[torch.rand(len(idx), generator=gen) < config.class_dropout] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, n_t, (len(idx),), generator=gen)
        x0, noise, t, labels = x0.to(dev), noise.to(dev), t.to(dev), labels.to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = renoise(x0, noise, a)
        out = unet(xt, t, class_labels=labels).sample
        target = training_target(x0, noise, a, config.prediction_type)
        mse = F.mse_loss(out[:, :1], target)
        losses = {"loss": mse, "mse": mse}
        if config.learned_variance:
            pred = out[:, :1].detach()
            eps = to_eps_x0(pred, xt, a, config.prediction_type)[0]
            vlb = terms.vlb_bits(x0, xt, t, eps, out[:, 1:]).mean()
            losses = {"loss": mse + config.vlb_weight * vlb, "mse": mse, "vlb": vlb}
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(unet)
        return {k: v.item() for k, v in losses.items()}

    unet.train()
    done = run.loop("unet", config.steps, step_fn)
    run.plot_losses()
    if not done:
        run.close()
        return None
    ema.copy_to(unet)
    unet.eval()
    out = Path(export_dir) if export_dir is not None else run.dir / "fashion-ddpm"
    if out.exists():
        shutil.rmtree(out)
    import copy

    DDPMPipeline(unet=copy.deepcopy(unet).to("cpu", torch.float16), scheduler=scheduler).save_pretrained(
        str(out), safe_serialization=True)
    # the null class lets minority sample unconditionally and with CFG
    update_model_index(out, null_class_label=NULL_CLASS, minority_defaults={"guidance": config.eval_guidance})
    metrics: dict[str, float | int] = {"final_loss": run.state["history"]["unet"][-1][1]}
    align = ddpm_alignment(out, config.eval_images_per_class, config.eval_steps, config.seed, dev,
                           grid_path=run.dir / "samples.png")
    if align:
        metrics.update(align)
    return finish_export(run, out, name="fashion-ddpm", config=config, data_root=data.root, metrics=metrics,
                         phases=("unet",))
