"""Prompt sources for ``minority generate --prompts-file``: plain text, JSON Lines and MS-COCO captions.

* plain text (``.txt`` or anything that is neither JSON nor JSON Lines): one prompt per line; blank lines and
  lines starting with ``#`` are ignored;
* JSON Lines (``.jsonl`` / ``.ndjson``, or content whose first record is a JSON object per line): one object
  per line with ``prompt`` and optional ``seed`` (that prompt then gets this one seed), ``negative_prompt``,
  ``class_label`` and ``id``. A record without ``prompt`` but with ``class_label`` conditions a pixel-space
  model; next to a ``prompt`` the class label is recorded in the manifest (e.g. for class-accuracy metrics);
* MS-COCO captions (``captions_*.json``: one JSON document with ``annotations[].caption`` and ``image_id``).

Selection (:func:`select_records`) is applied in this order: ``sample`` (a random subset of N records, kept in
file order, drawn with ``random.Random(sample_seed)``, the papers' "10K random captions"), then ``offset``,
then ``limit``. Every malformed input raises :class:`~minority.errors.MinorityError` naming the file and line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from minority.errors import MinorityError

JSONL_KEYS = ("prompt", "seed", "negative_prompt", "class_label", "id")
FORMATS = ("text", "jsonl", "coco")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt (or class label) with its optional per-prompt overrides.

    Attributes:
        prompt: the text (None for a class-label-only record of a pixel-space model).
        seed: this prompt's one seed (overrides the run's seed list), or None.
        negative_prompt: this prompt's negative prompt, or None (the run's).
        class_label: class label (pixel models: the condition; text models: recorded in the manifest).
        meta: extra manifest fields (``id``; COCO ``image_id``).
        line: 1-based line of the record in its file (0 when not from a file).
    """

    prompt: str | None
    seed: int | None = None
    negative_prompt: str | None = None
    class_label: int | None = None
    meta: dict = field(default_factory=dict)
    line: int = 0


def detect_format(path: Path, text: str) -> str:
    """``text``, ``jsonl`` or ``coco`` from the file extension, else from the content."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "coco"
    if suffix == ".txt":
        return "text"
    head = text.lstrip()
    if head.startswith("{"):
        first = head.splitlines()[0].strip()
        try:
            json.loads(first)
            return "jsonl"  # the first line is a whole JSON object
        except json.JSONDecodeError:
            return "coco"  # a JSON document spread over several lines
    return "text"


def parse_text(text: str) -> list[PromptRecord]:
    """One prompt per line; blank lines and ``#`` comments ignored."""
    return [PromptRecord(prompt=ln.strip(), line=i) for i, ln in enumerate(text.splitlines(), 1)
            if ln.strip() and not ln.lstrip().startswith("#")]


def _int_field(obj: dict, key: str, where: str, minimum: int = 0) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MinorityError(f"{where}: {key!r} must be an integer >= {minimum} (got {value!r}).")
    return value


def parse_jsonl(text: str, path: str = "<prompts>") -> list[PromptRecord]:
    """One JSON object per line (blank lines ignored); see the module docstring for the keys."""
    records: list[PromptRecord] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise MinorityError(f"{where} is not valid JSON ({err.msg} at column {err.colno}): fix or remove the line.") from None
        if not isinstance(obj, dict):
            raise MinorityError(f"{where} is not a JSON object: write {{\"prompt\": \"...\"}} per line.")
        unknown = sorted(set(obj) - set(JSONL_KEYS))
        if unknown:
            raise MinorityError(f"{where} has unknown key {unknown[0]!r}: the keys are {', '.join(JSONL_KEYS)}.")
        prompt, neg = obj.get("prompt"), obj.get("negative_prompt")
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise MinorityError(f"{where}: 'prompt' must be a non-empty string (got {prompt!r}).")
        if neg is not None and not isinstance(neg, str):
            raise MinorityError(f"{where}: 'negative_prompt' must be a string (got {neg!r}).")
        label = _int_field(obj, "class_label", where)
        if prompt is None and label is None:
            raise MinorityError(f"{where} has no 'prompt' (nor a 'class_label' for a pixel-space model).")
        if records and (records[0].prompt is None) != (prompt is None):
            raise MinorityError(f"{where}: mix of prompt records and class-label-only records; use one kind per file.")
        meta = {"id": obj["id"]} if obj.get("id") is not None else {}
        records.append(PromptRecord(prompt=prompt.strip() if prompt else None, seed=_int_field(obj, "seed", where),
                                    negative_prompt=neg, class_label=label, meta=meta, line=i))
    return records


def parse_coco(text: str, path: str = "<prompts>") -> list[PromptRecord]:
    """MS-COCO captions JSON: every ``annotations[k].caption`` (``image_id`` and ``id`` go to the manifest)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise MinorityError(f"{path} line {err.lineno} is not valid JSON ({err.msg} at column {err.colno}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise MinorityError(f"{path} is not an MS-COCO captions file (no 'annotations' list); "
                            "for one JSON object per line name the file .jsonl.")
    records = []
    for k, ann in enumerate(doc["annotations"]):
        cap = ann.get("caption") if isinstance(ann, dict) else None
        if not isinstance(cap, str) or not cap.strip():
            raise MinorityError(f"{path}: annotations[{k}] has no non-empty 'caption'.")
        meta = {key: ann[key] for key in ("image_id", "id") if ann.get(key) is not None}
        records.append(PromptRecord(prompt=" ".join(cap.split()), meta=meta))
    return records


def select_records(records: list[PromptRecord], *, limit: int | None = None, offset: int = 0,
                   sample: int | None = None, sample_seed: int = 0, source: str = "the prompts file") -> list[PromptRecord]:
    """Random subset (``sample``, file order kept), then ``offset``, then ``limit``."""
    if offset < 0:
        raise MinorityError(f"--offset must be >= 0 (got {offset}).")
    if limit is not None and limit < 1:
        raise MinorityError(f"--limit must be >= 1 (got {limit}).")
    if sample is not None:
        if sample < 1:
            raise MinorityError(f"--sample must be >= 1 (got {sample}).")
        if sample > len(records):
            raise MinorityError(f"--sample {sample} asks for more prompts than the {len(records)} in {source}.")
        keep = sorted(random.Random(sample_seed).sample(range(len(records)), sample))
        records = [records[i] for i in keep]
    records = records[offset:]
    return records if limit is None else records[:limit]


def read_prompts_file(path: str | Path, *, limit: int | None = None, offset: int = 0, sample: int | None = None,
                      sample_seed: int = 0, fmt: str | None = None) -> list[PromptRecord]:
    """Read and select the records of a prompts file (format from ``fmt``, else detected)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise MinorityError(f"Cannot read prompts file {path}: {getattr(err, 'strerror', None) or err}.") from err
    fmt = fmt or detect_format(p, text)
    if fmt not in FORMATS:
        raise MinorityError(f"Unknown prompts-file format {fmt!r}: use one of {', '.join(FORMATS)}.")
    parse = {"text": lambda t: parse_text(t), "jsonl": lambda t: parse_jsonl(t, str(path)),
             "coco": lambda t: parse_coco(t, str(path))}[fmt]
    records = parse(text)
    if not records:
        raise MinorityError(f"Prompts file {path} holds no prompts.")
    return select_records(records, limit=limit, offset=offset, sample=sample, sample_seed=sample_seed, source=str(path))


def config_fields(records: list[PromptRecord], prompts: tuple[str, ...] = (), class_labels: tuple = ()) -> dict:
    """:class:`~minority.runs.generate.GenerateConfig` fields for command-line ``prompts`` / ``class_labels`` followed
    by file ``records``: the items plus per-item overrides (empty tuples when no record has one)."""
    text = not records or records[0].prompt is not None
    if text:
        prompts = (*prompts, *(r.prompt for r in records))
        lead = len(prompts) - len(records)
    else:
        class_labels = (*class_labels, *(r.class_label for r in records))
        lead = len(class_labels) - len(records)
    pad = (None,) * lead
    seeds = (*pad, *(r.seed for r in records))
    negs = (*pad, *(r.negative_prompt for r in records))
    metas = ({},) * lead + tuple(
        {**r.meta, **({"class_label": r.class_label} if text and r.class_label is not None else {})} for r in records)
    return {
        "prompts": tuple(prompts), "class_labels": tuple(class_labels),
        "prompt_seeds": seeds if any(s is not None for s in seeds) else (),
        "negative_prompts": negs if any(n is not None for n in negs) else (),
        "prompt_meta": metas if any(metas) else (),
    }
