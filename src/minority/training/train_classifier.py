"""``minority train fashion-classifier``: the small CNN of :mod:`.classifier` on Fashion-MNIST."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from minority.data import load_fashion_mnist, to_model_input
from minority.nets.fashion_classifier import (
    ClassifierConfig,
    FashionClassifier,
    load_classifier,
    save_classifier,
)
from minority.training.checkpoint import Run
from minority.training.common import batch_indices, random_shift_flip, select_device, warmup_cosine
from minority.training.provenance import data_fingerprint, write_provenance


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Hyper-parameters of ``minority train fashion-classifier`` (written as ``config.json``)."""

    seed: int = 0
    steps: int = 5600  # ~12 epochs of batch 128
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup: int = 200
    label_smoothing: float = 0.05
    augment: bool = True
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train_limit: int | None = None  # use only the first N training images (tests)


@torch.no_grad()
def evaluate_accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``images (N, 1, 32, 32)`` in [-1, 1] with ``labels (N,)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def train_classifier(config: ClassifierTrainConfig, run_dir: str | Path, *, data_dir: str | Path | None = None,
                     resume: bool = False, device: str = "auto", checkpoint_minutes: float = 5.0,
                     max_minutes: float | None = None, export_dir: str | Path | None = None,
                     log_every: int = 50, export_only: bool = False) -> Path | None:
    """Train, evaluate on the test split and export to ``export_dir`` (default ``run_dir/fashion-classifier``).

    Returns the export folder, or None when stopped early by ``max_minutes`` (resume later).
    """
    # long: the training loop (setup, resume, epochs, checkpoint, export) read top to bottom
    dev = select_device(device)
    torch.manual_seed(config.seed)
    data = load_fashion_mnist(data_dir)
    x_train = to_model_input(data.train_images)
    y_train = data.train_labels
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    x_test, y_test = to_model_input(data.test_images), data.test_labels

    run = Run(run_dir, config, resume=resume, checkpoint_minutes=checkpoint_minutes, max_minutes=max_minutes,
              log_every=log_every, export_only=export_only)
    model = run.add_module("classifier", FashionClassifier(config.model).to(dev))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, config.steps, config.warmup, 0.0))
    run.add_optimizer("classifier", opt, sched)
    gen = run.add_generator("noise", torch.Generator().manual_seed(config.seed))
    if resume:
        run.load()
    run.log(f"fashion-classifier: {sum(p.numel() for p in model.parameters())} parameters on {dev}, "
            f"{len(x_train)} training images")

    def step_fn(step: int) -> dict[str, float]:
        idx = batch_indices(len(x_train), config.batch_size, config.seed, step)
        x = x_train[idx]
        if config.augment:
            x = random_shift_flip(x, gen)
        logits = model(x.to(dev))
        loss = F.cross_entropy(logits, y_train[idx].to(dev), label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    model.train()
    done = run.loop("classifier", config.steps, step_fn)
    run.plot_losses()
    if not done:
        run.close()
        return None
    acc = evaluate_accuracy(model, x_test, y_test)
    train_acc = evaluate_accuracy(model, x_train[:10000], y_train[:10000])
    run.log(f"test accuracy {acc:.4f} (train subset {train_acc:.4f})")
    out = Path(export_dir) if export_dir is not None else run.dir / "fashion-classifier"
    if out.exists():
        shutil.rmtree(out)
    save_classifier(model.cpu().eval(), out, dtype=torch.float16)
    # fp16 export must not change the result

    acc16 = evaluate_accuracy(load_classifier(out), x_test, y_test)
    run.log(f"exported to {out} (fp16 weights, test accuracy {acc16:.4f})")
    write_provenance(out, name="fashion-classifier", config=config, steps={"classifier": config.steps},
                     wall_s=run.wall_s, data=data_fingerprint(data.root),
                     metrics={"test_accuracy": acc16, "test_accuracy_fp32": acc, "train_subset_accuracy": train_acc,
                              "test_images": len(x_test)})
    shutil.copy(run.dir / "loss.png", out / "loss.png")
    run.close()
    return out


def tiny_config(seed: int = 0) -> ClassifierTrainConfig:
    """A few-second configuration for smoke tests."""
    return ClassifierTrainConfig(seed=seed, steps=4, batch_size=16, warmup=2,
                                 model=ClassifierConfig(channels=(4, 8), feature_dim=16))
