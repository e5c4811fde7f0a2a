"""Per-image random number generation (SPEC §3.4).

One ``torch.Generator("cpu")`` per image, seeded with that image's seed. Every draw for image k comes
from generator k, with shape ``(1, ...)``, in call order, so image k is bit-identical whatever the batch
size or the number of processes. Draws are made on the CPU and moved to the target device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, ``manual_seed(seed)``."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def randn_per_sample(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``(len(generators), *shape)`` standard normals, row k from generator k.

    Each row is drawn as a ``(1, *shape)`` tensor on the CPU exactly like diffusers'
    ``randn_tensor`` with a list of generators, so the initial latent matches diffusers pipelines.
    """
    rows = [torch.randn((1, *shape), generator=g, device="cpu", dtype=dtype) for g in generators]
    return torch.cat(rows, dim=0).to(device)
