"""``minority train fashion-sd``: VAE first, then UNet + CLIP text encoder jointly on cached latents.

Phases (each resumable, see :class:`.common.Run`):

1. ``vae``: ``AutoencoderKL`` on 32×32 RGB (gray replicated) images, loss MSE + ``kl_weight``·KL/pixels.
2. latents of all training images are cached (``run/latents.safetensors``) and the latent scaling
   factor is set to 1/std (SD uses 0.18215 for its VAE).
3. ``unet``: ε-prediction with SD's scaled-linear schedule; captions from :mod:`minority.data.captions`
   with ``empty_fraction`` empty ones for classifier-free guidance; EMA of UNet and text encoder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minority.data import class_prompts, make_captions, to_model_input
from minority.embedded import resolve_embedded
from minority.nets.fashion_classifier import load_classifier
from minority.pipelines.clip_vocab import load_clip_tokenizer
from minority.pipelines.text2image import MinorityPipeline
from minority.training.checkpoint import start_training
from minority.training.common import (
    EMA,
    batch_indices,
    save_grid,
    update_model_index,
    warmup_cosine,
)
from minority.training.provenance import finish_export
from minority.training.sd_models import (
    SDArchConfig,
    build_text_encoder,
    build_train_scheduler,
    build_unet,
    build_vae,
    save_sd_pipeline,
)


@dataclass(frozen=True)
class SDTrainConfig:
    """Hyper-parameters of ``minority train fashion-sd`` (written as ``config.json``)."""

    seed: int = 0
    vae_steps: int = 2000
    vae_batch_size: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4
    steps: int = 5000  # UNet + text encoder
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    empty_fraction: float = 0.1
    weight_decay: float = 1e-2
    arch: SDArchConfig = field(default_factory=SDArchConfig)
    train_limit: int | None = None  # first N training images only (tests)
    eval_images_per_class: int = 10
    eval_steps: int = 25
    eval_guidance: float = 3.0


def tiny_config(seed: int = 0) -> SDTrainConfig:
    """Seconds-long configuration for smoke tests."""
    arch = SDArchConfig(vae_channels=(8, 8, 8), vae_groups=4, text_hidden=16, text_layers=1, text_heads=2,
                        unet_channels=(16, 16, 16), unet_heads=2, unet_groups=4)
    return SDTrainConfig(seed=seed, vae_steps=3, vae_batch_size=8, steps=3, batch_size=8, warmup=1, arch=arch,
                         train_limit=64, eval_images_per_class=1, eval_steps=2)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` -> ``(B, 3, H, W)`` by replication."""
    return x.expand(-1, 3, -1, -1)


class CaptionTokens:
    """Token ids ``(77,)`` per caption, cached (the caption set is small)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """``(B, 77)`` int64 ids, padded to ``model_max_length`` like ``StableDiffusionPipeline``."""
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self.cache.update(zip(missing, ids))
        return torch.stack([self.cache[c] for c in captions])


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``(mean, logvar)``, each ``(N, 4, h, w)``, of ``images (N, 1, 32, 32)`` in [-1, 1]."""
    means, logvars = [], []
    for i in range(0, len(images), batch_size):
        dist = vae.encode(to_rgb(images[i : i + batch_size]).to(device)).latent_dist
        means.append(dist.mean.cpu())
        logvars.append(dist.logvar.cpu())
    return torch.cat(means), torch.cat(logvars)


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor, device: torch.device) -> float:
    """Mean PSNR (dB, on [0, 1] gray) of VAE reconstructions (posterior mode) of ``images (N, 1, 32, 32)``."""
    x = to_rgb(images).to(device)
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1).mean(1, keepdim=True)
    mse = ((rec.cpu() - images) / 2).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


@torch.no_grad()
def sample_alignment(folder: Path, images_per_class: int, steps: int, guidance: float, seed: int,
                     device: torch.device, grid_path: Path | None = None) -> dict[str, float] | None:
    """Classifier accuracy of pipeline samples of the 10 class prompts (None without the embedded classifier).

    Sampled by the library's own DDIM loop (:class:`minority.pipelines.text2image.MinorityPipeline`) from the
    exported folder; also writes the samples at ``guidance`` as a grid (one row per class) to ``grid_path``.
    """
    pipe = MinorityPipeline.from_pretrained(str(folder), device=device)  # the library's own DDIM loop
    if grid_path is not None:
        gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(8)]
        rows = [pipe([p] * 8, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                     output_type="pt").images for p in class_prompts()]
        save_grid(torch.cat(rows) * 2 - 1, grid_path, nrow=8)
    clf_dir = resolve_embedded("fashion-classifier")
    if clf_dir is None:
        return None
    clf = load_classifier(clf_dir, device)
    prompts = [p for p in class_prompts() for _ in range(images_per_class)]
    labels = torch.arange(10).repeat_interleave(images_per_class)
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    out = {}
    for w in sorted({1.0, guidance}):
        correct = 0
        for i in range(0, len(prompts), 50):
            imgs = pipe(prompts[i : i + 50], num_inference_steps=steps, guidance_scale=w,
                        generator=gens[i : i + 50], output_type="pt").images
            pred = clf(imgs.to(device) * 2 - 1).argmax(1).cpu()
            correct += int((pred == labels[i : i + 50]).sum())
            gens[i : i + 50] = [torch.Generator("cpu").manual_seed(seed + i + k) for k in range(len(pred))]
        out[f"class_accuracy_guidance_{w:g}"] = correct / len(prompts)
    out["eval_steps"] = steps
    out["eval_samples_per_guidance"] = len(prompts)
    return out


def train_sd(config: SDTrainConfig, run_dir: str | Path, *, data_dir: str | Path | None = None, resume: bool = False,
             device: str = "auto", checkpoint_minutes: float = 5.0, max_minutes: float | None = None,
             export_dir: str | Path | None = None, log_every: int = 25,
             export_only: bool = False) -> Path | None:
    """Train all phases, export a ``StableDiffusionPipeline`` folder to ``export_dir`` (default ``run/fashion-sd``).

    Returns the export folder, or None when stopped by ``max_minutes`` (continue with ``resume=True``).
    """
    # long: the training loop (setup, resume, steps, EMA, checkpoint, preview, export) read top to bottom

    dev, data, x_train, y_train, run = start_training(
        config, run_dir, data_dir=data_dir, device=device, resume=resume, checkpoint_minutes=checkpoint_minutes,
        max_minutes=max_minutes, log_every=log_every, export_only=export_only)
    tokenizer = load_clip_tokenizer(run.dir / "tokenizer")
    arch = config.arch
    vae = run.add_module("vae", build_vae(arch).to(dev))
    text_encoder = run.add_module("text_encoder", build_text_encoder(arch, len(tokenizer)).to(dev))
    unet = run.add_module("unet", build_unet(arch).to(dev))
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    vae_sched = torch.optim.lr_scheduler.LambdaLR(vae_opt, lambda s: warmup_cosine(s, config.vae_steps, 100, 0.1))
    run.add_optimizer("vae", vae_opt, vae_sched)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, config.steps, config.warmup, 0.1))
    run.add_optimizer("unet", opt, sched)
    ema_unet = run.add_ema("unet", EMA(unet, config.ema_decay))
    ema_text = run.add_ema("text_encoder", EMA(text_encoder, config.ema_decay))
    gen = run.add_generator("noise", torch.Generator().manual_seed(config.seed))
    if resume:
        run.load()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    run.log(f"fashion-sd on {dev}: vae {count(vae)}, text encoder {count(text_encoder)}, unet {count(unet)} "
            f"parameters; {len(x_train)} training images")

    # -- phase 1: VAE ------------------------------------------------------------------------------
    def vae_step(step: int) -> dict[str, float]:
        x = to_rgb(x_train[batch_indices(len(x_train), config.vae_batch_size, config.seed, step)]).to(dev)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=None)).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = mse + config.kl_weight * kl
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()
        vae_sched.step()
        return {"loss": loss.item(), "mse": mse.item(), "kl": kl.item()}

    vae.train()
    if not run.loop("vae", config.vae_steps, vae_step):
        run.plot_losses()
        run.close()
        return None
    vae.eval().requires_grad_(False)

    # -- phase 2: latent cache and scaling factor ---------------------------------------------------
    cache = run.dir / "latents.safetensors"
    if cache.is_file() and "latents" in run.state["done"]:
        lat = load_file(str(cache))
    else:
        run.log("encoding the training set into latents")
        mean, logvar = encode_dataset(vae, x_train, dev)
        g = torch.Generator().manual_seed(config.seed)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
        lat = {"mean": mean.contiguous(), "logvar": logvar.contiguous(), "scaling_factor": (1.0 / z.std()).reshape(1)}
        save_file(lat, str(cache))
        run.state["done"].append("latents")
        run.save()
    scaling = float(lat["scaling_factor"])
    vae.register_to_config(scaling_factor=scaling)
    psnr = reconstruction_psnr(vae, to_model_input(data.test_images[:2000]), dev)
    run.log(f"latent scaling factor {scaling:.5f}; VAE test PSNR {psnr:.2f} dB")

    # -- phase 3: UNet + text encoder ---------------------------------------------------------------
    noise_sched = build_train_scheduler()
    alphas = noise_sched.alphas_cumprod.to(dev)
    tokens = CaptionTokens(tokenizer)
    lat_mean, lat_std = lat["mean"], (0.5 * lat["logvar"]).exp()
    n_t = noise_sched.config.num_train_timesteps

    def unet_step(step: int) -> dict[str, float]:
        idx = batch_indices(len(lat_mean), config.batch_size, config.seed + 1, step)
        eps_lat = torch.randn(lat_mean[idx].shape, generator=gen)
        z0 = ((lat_mean[idx] + lat_std[idx] * eps_lat) * scaling).to(dev)
        noise = torch.randn(z0.shape, generator=gen).to(dev)
        t = torch.randint(0, n_t, (len(idx),), generator=gen).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        captions = make_captions(y_train[idx].tolist(), seed=config.seed * 1_000_003 + step,
                                 empty_fraction=config.empty_fraction)
        states = text_encoder(tokens(captions).to(dev))[0]
        pred = unet(zt, t, encoder_hidden_states=states).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        return {"loss": loss.item()}

    unet.train()
    text_encoder.train()
    done = run.loop("unet", config.steps, unet_step)
    run.plot_losses()
    if not done:
        run.close()
        return None

    # -- export ---------------------------------------------------------------------------------------
    ema_unet.copy_to(unet)
    ema_text.copy_to(text_encoder)
    out = Path(export_dir) if export_dir is not None else run.dir / "fashion-sd"
    if out.exists():
        shutil.rmtree(out)
    save_sd_pipeline(out, vae.eval(), text_encoder.eval(), unet.eval(), tokenizer, dtype=torch.float16)
    update_model_index(out, minority_defaults={"guidance": config.eval_guidance})
    metrics: dict[str, float | int | None] = {"vae_test_psnr_db": round(psnr, 3), "latent_scaling_factor": scaling,
                                             "final_unet_loss": run.state["history"]["unet"][-1][1]}
    align = sample_alignment(out, config.eval_images_per_class, config.eval_steps, config.eval_guidance,
                             config.seed, dev, grid_path=run.dir / "samples.png")
    if align:
        metrics.update(align)
    return finish_export(run, out, name="fashion-sd", config=config, data_root=data.root, metrics=metrics,
                         phases=("vae", "unet"))
