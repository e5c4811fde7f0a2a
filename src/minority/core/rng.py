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


def use_deterministic_kernels() -> None:
    """Ask PyTorch for deterministic kernels (CUDA: cuBLAS workspace, cuDNN without autotuning, no atomics).

    On the CPU results are already run-to-run identical; on CUDA some backward kernels accumulate with
    atomics, and MinorityPrompt's Adam steps can amplify those last-bit differences into a visibly different
    image. Ops without a deterministic implementation (e.g. bilinear upsampling's backward on CUDA) warn
    instead of failing. Call before the first CUDA work of the process.
    """
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
