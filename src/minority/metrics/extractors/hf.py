"""Hub extractors through ``transformers``: CLIP ViT-L/14, PickScore, ResNet-50 and DINO ViT-B/8.

These are the papers' choices; they need their weights, which are not available offline. Each loader
takes ``weights`` = a local folder saved with ``save_pretrained`` (or downloaded with
``huggingface-cli download ID --local-dir DIR``); without it the hub id is used (network or HF cache).
When loading fails, a :class:`~minority.errors.MinorityError` names the weights and how to point to
local files.

Preprocessing: images are resized (clean-fid bicubic, no crop) to the model's input size and normalised
with the mean/std of the folder's ``preprocessor_config.json`` (``crop_size`` if the processor crops, else
``size``); the transformers image processors are not used (they may need torchvision).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from minority.errors import MinorityError
from minority.metrics.extractors.base import FeatureExtractor

HUB_IDS = {
    "clip-vit-l14": "openai/clip-vit-large-patch14",
    "pickscore": "yuvalkirstain/PickScore_v1",
    "resnet50": "microsoft/resnet-50",
    "dino-vitb8": "facebook/dino-vitb8",
}
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


HUB_HINTS = {
    "clip-vit-l14": "--set clip_weights=DIR for CLIPScore, or --weights DIR with --features clip-vit-l14",
    "pickscore": "--set pickscore_weights=DIR",
    "resnet50": "--weights DIR with --features resnet50",
    "dino-vitb8": "--weights DIR with --features dino-vitb8, or --set ibs_weights=DIR for IBS",
}


def hub_error(what: str, source: str, hub_id: str, exc: BaseException, name: str = "") -> MinorityError:
    """The one-line error for hub weights that cannot be loaded (offline, not in the cache, wrong folder)."""
    hint = HUB_HINTS.get(name, "weights=DIR")
    return MinorityError(
        f"could not load the {what} weights {source!r} ({type(exc).__name__}: offline, not in the Hugging Face cache, "
        f"or not a model folder): on a machine with internet run `huggingface-cli download {hub_id} --local-dir DIR`, "
        f"copy DIR here and pass it (CLI: {hint}; Python: weights=DIR)"
    )


def from_pretrained(cls, source: str, what: str, hub_id: str, local_files_only: bool | None = None, name: str = "",
                    **kw):
    """``cls.from_pretrained(source)`` with a :class:`MinorityError` naming the weights on failure."""
    local = Path(source).expanduser()
    if local.is_dir():
        source = str(local)
    elif local.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1:
        raise MinorityError(f"{what} weights folder {local} does not exist: pass a folder saved with save_pretrained")
    if local_files_only is None:
        local_files_only = _offline()
    try:
        return cls.from_pretrained(source, local_files_only=local_files_only, **kw)
    except Exception as exc:  # noqa: BLE001 -- OSError, HF hub errors, connection errors, bad configs
        raise hub_error(what, source, hub_id, exc, name) from exc


def read_preprocessor_config(source: str, local_files_only: bool | None = None) -> dict:
    """``preprocessor_config.json`` of a folder or hub id, or ``{}`` if there is none."""
    p = Path(source).expanduser()
    if p.is_dir():
        f = p / "preprocessor_config.json"
        return json.loads(f.read_text()) if f.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source, "preprocessor_config.json",
                               local_files_only=_offline() if local_files_only is None else local_files_only)
        return json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 -- the model load reports connectivity problems
        return {}


def _side(value, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    if "height" in value and "width" in value:
        return (int(value["height"]), int(value["width"]))
    if "shortest_edge" in value:
        return (int(value["shortest_edge"]),) * 2
    return (default, default)


def preprocessing_from_config(cfg: dict, default_size: int, mean, std) -> tuple[tuple[int, int], tuple, tuple]:
    """``(input_size, mean, std)`` from a processor config (crop size when it crops, else size)."""
    size = _side(cfg.get("crop_size") if cfg.get("do_center_crop", "crop_size" in cfg) else cfg.get("size"), default_size)
    return size, tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))


class _Normalised(FeatureExtractor):
    """Common [0,255] -> normalised pixel conversion."""

    def _setup_norm(self, input_size, mean, std) -> None:
        self.input_size = tuple(int(v) for v in input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.preprocessing = f"clean-fid bicubic resize to {self.input_size}, mean {tuple(mean)}, std {tuple(std)}"

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 255] -> normalised model input."""
        dtype = next(self.parameters()).dtype
        return ((images / 255.0 - self.mean) / self.std).to(dtype)


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features``; older versions a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPExtractor(_Normalised):
    """A CLIP model (``transformers.CLIPModel``) for CLIPScore, PickScore and CLIP-space features.

    ``features`` = projected image embeddings (not normalised); :meth:`image_embeds` and
    :meth:`text_embeds` give the embeddings that the scores compare; :attr:`logit_scale` is
    ``exp(model.logit_scale)`` (≈ 100).
    """

    def __init__(self, model, tokenizer, name: str, input_size, mean, std) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self._setup_norm(input_size, mean, std)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings ``(B, D)`` of images ``(B, 3, H, W)`` in [0, 255] at ``input_size``."""
        return _pooled(self.model.get_image_features(pixel_values=self.pixels(images)))

    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """Projected text embeddings ``(B, D)`` of ``prompts`` (truncated to the model's context length)."""
        max_len = min(int(getattr(self.tokenizer, "model_max_length", 77) or 77),
                      int(self.model.config.text_config.max_position_embeddings))
        tok = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        device = self.model.logit_scale.device
        return _pooled(self.model.get_text_features(input_ids=tok["input_ids"].to(device),
                                                    attention_mask=tok["attention_mask"].to(device)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.image_embeds(images)}


def load_clip(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    name: str = "clip-vit-l14",
    processor: str | None = None,
    local_files_only: bool | None = None,
) -> CLIPExtractor:
    """Load a CLIP model (+ tokenizer, preprocessing) from a folder or hub id.

    Args:
        weights: local folder (``save_pretrained`` layout); default: the hub id of ``name``.
        name: ``"clip-vit-l14"`` or ``"pickscore"`` (its tokenizer and preprocessing come from
            ``processor``, default ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, unless the folder has them).
    """
    from transformers import AutoTokenizer, CLIPModel

    hub_id = HUB_IDS.get(name, name)
    source = str(weights) if weights is not None else hub_id
    what = "PickScore" if name == "pickscore" else "CLIP ViT-L/14" if name == "clip-vit-l14" else name
    model = from_pretrained(CLIPModel, source, what, hub_id, local_files_only, name=name)
    proc_source = source
    has_tok = Path(source).is_dir() and any((Path(source) / f).is_file() for f in ("tokenizer.json", "vocab.json"))
    if name == "pickscore" and not has_tok:
        proc_source = processor or PICKSCORE_PROCESSOR
    tokenizer = from_pretrained(AutoTokenizer, proc_source, f"{what} tokenizer", proc_source, local_files_only, name=name)
    cfg = read_preprocessor_config(proc_source, local_files_only)
    size, mean, std = preprocessing_from_config(cfg, int(model.config.vision_config.image_size), CLIP_MEAN, CLIP_STD)
    return CLIPExtractor(model, tokenizer, name, size, mean, std).to(device)


class VisionExtractor(_Normalised):
    """ResNet (pooled 2048-d; ``spatial`` = first 7 channels of stage 3) or ViT/DINO (CLS token) features."""

    def __init__(self, model, name: str, input_size, mean, std) -> None:
        super().__init__()
        self.model = model.eval()
        self.name = name
        self.kind = "resnet" if model.config.model_type == "resnet" else "vit"
        self._setup_norm(input_size, mean, std)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.pixels(images)
        if self.kind == "resnet":
            out = self.model(pixel_values=x, output_hidden_states=True)
            stage = out.hidden_states[-2] if len(out.hidden_states) > 2 else out.hidden_states[-1]
            return {"features": out.pooler_output.flatten(1), "spatial": stage[:, :7].flatten(1)}
        out = self.model(pixel_values=x)
        return {"features": out.last_hidden_state[:, 0]}


def load_vision(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    name: str = "dino-vitb8",
    local_files_only: bool | None = None,
) -> VisionExtractor:
    """Load ``resnet50`` (``microsoft/resnet-50``) or ``dino-vitb8`` (``facebook/dino-vitb8``) via ``AutoModel``."""
    from transformers import AutoModel

    hub_id = HUB_IDS.get(name, name)
    source = str(weights) if weights is not None else hub_id
    what = {"resnet50": "ResNet-50", "dino-vitb8": "DINO ViT-B/8"}.get(name, name)
    model = from_pretrained(AutoModel, source, what, hub_id, local_files_only, name=name)
    default = int(getattr(model.config, "image_size", 224) or 224)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    size, mean, std = preprocessing_from_config(read_preprocessor_config(source, local_files_only), default, mean, std)
    return VisionExtractor(model, name, size, mean, std).to(device)
