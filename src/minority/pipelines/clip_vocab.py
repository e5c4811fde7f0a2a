"""The real OpenAI CLIP BPE tokenizer, built offline.

The exact CLIP vocabulary (``bpe_simple_vocab_16e6.txt.gz``) ships inside the ``open-clip-torch`` wheel
(installed with ``--no-deps``; only this file is read). From it we write the ``vocab.json`` /
``merges.txt`` pair that ``transformers.CLIPTokenizer`` loads, identical to the tokenizer of
``openai/clip-vit-large-patch14`` (49,408 tokens, ``<|endoftext|>`` = 49407).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from minority.errors import MinorityError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def find_bpe_file() -> Path:
    """Locate the CLIP BPE vocabulary inside the installed ``open_clip`` package."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise MinorityError(
            "The CLIP BPE vocabulary was not found: install it with "
            "`pip install --no-deps open-clip-torch` (only its vocabulary file is used)."
        )
    path = Path(spec.origin).parent / BPE_FILE
    if not path.is_file():
        raise MinorityError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall open-clip-torch`.")
    return path


def write_clip_tokenizer_files(folder: str | Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write ``vocab.json``, ``merges.txt`` and tokenizer configs of the real CLIP tokenizer.

    Args:
        folder: destination (created); afterwards ``CLIPTokenizer.from_pretrained(folder)`` works.
        pad_token: ``"<|endoftext|>"`` as in SD 1.x, or ``"!"`` as in SD 2.x / SDXL encoder 2.
    Returns:
        The folder path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(find_bpe_file()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_tokens = list(_bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def load_clip_tokenizer(folder: str | Path | None = None, pad_token: str = "<|endoftext|>"):
    """Return a ``transformers.CLIPTokenizer`` with the real CLIP vocabulary (written to ``folder``)."""
    import tempfile

    from transformers import CLIPTokenizer

    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="clip-tokenizer-"))
    if not (folder / "vocab.json").is_file():
        write_clip_tokenizer_files(folder, pad_token=pad_token)
    return CLIPTokenizer.from_pretrained(str(folder))
