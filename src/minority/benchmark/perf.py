"""The ``perf`` protocol: seconds per image, peak memory, UNet forward/backward passes per method and
backbone, the time ratio to DDIM, and on CUDA the throughput at the largest batch that fits.

Measurement: one warm-up call per method (2 steps), then the timed batched pipeline calls (images kept in
memory; they are written afterwards for the grid). Counters:

* UNet forward: ``out.settings["unet_calls"]`` (a batched CFG pair counts once);
* UNet backward: UNet forwards whose output received a gradient (a tensor hook on the UNet output);
* backward calls: outermost ``torch.autograd.backward`` / ``torch.autograd.grad`` calls = optimisation
  iterations (MinorityPrompt) or guided steps (SGMS);
* peak memory: CPU — the process' peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``
  before each method); CUDA — ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import logging
import math
import re
import resource
import time
from pathlib import Path

import torch

from minority.benchmark.config import Plan
from minority.benchmark.protocols import PIXEL_PERF_ARMS, Arm, class_prompts
from minority.errors import MinorityError
from minority.methods import get_method, make_method
from minority.metrics.stats import summarize
from minority.pipelines.pixel import PixelPipeline, load_pipeline
from minority.runs.generate import image_name, resolve_device
from minority.runs.io import append_jsonl, save_image_atomic

log = logging.getLogger("minority")


class PassCounter:
    """Counts UNet backward passes (gradient hook on the UNet output) and outermost autograd backward calls
    while active (``with PassCounter(unet) as c: ...``)."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.unet_backward = 0
        self.backward_calls = 0
        self._depth = 0

    def _on_forward(self, module, args, output) -> None:
        t = getattr(output, "sample", output[0] if isinstance(output, tuple) else output)
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.register_hook(self._on_grad)

    def _on_grad(self, grad: torch.Tensor) -> None:
        self.unet_backward += 1

    def _wrap(self, fn):
        def counted(*args, **kwargs):
            if self._depth == 0:
                self.backward_calls += 1
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def __enter__(self) -> PassCounter:
        self._handle = self.unet.register_forward_hook(self._on_forward)
        self._orig = (torch.autograd.backward, torch.autograd.grad)
        torch.autograd.backward, torch.autograd.grad = self._wrap(self._orig[0]), self._wrap(self._orig[1])
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        torch.autograd.backward, torch.autograd.grad = self._orig


class PeakMemory:
    """Peak memory during a block: process RSS on CPU (MiB), allocated memory on CUDA (MiB)."""

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self.kind = "cuda_allocated" if self.cuda else "rss"
        self.peak_mb = math.nan

    @staticmethod
    def _reset_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _hwm_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise OSError("no VmHWM")

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif not self._reset_rss():
            self.kind = "rss_lifetime_peak"  # cannot reset: the process' peak since start
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        try:
            self.peak_mb = self._hwm_mb()
        except OSError:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.kind = "rss_lifetime_peak"


def _call(pipe, items: list, seeds: list[int], arm: Arm, params: dict, steps, guidance):
    kw = dict(method=arm.method, num_inference_steps=steps, guidance_scale=guidance, seeds=seeds, **params)
    if isinstance(pipe, PixelPipeline):
        return pipe(class_labels=items, **kw)
    return pipe(items, **kw)


def _batches(jobs: list[tuple], batch_size: int, whole_groups: bool) -> list[list[tuple]]:
    if not whole_groups:
        return [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    groups: dict = {}
    for j in jobs:
        groups.setdefault(j[0], []).append(j)
    return list(groups.values())


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _throughput(pipe, item, arm: Arm, params: dict, steps, guidance, device: str, max_batch: int) -> tuple:
    """CUDA: images per second at the largest power-of-two batch (<= ``max_batch``) that fits in memory."""
    best = (None, None)
    b = 2 if arm.method == "diverse-prompt" else 1
    while b <= max_batch:
        try:
            _call(pipe, [item] * b, list(range(b)), arm, params, _warm_steps(arm, params), guidance)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            _call(pipe, [item] * b, list(range(b)), arm, params, steps, guidance)
            _sync(device)
            best = (b, b / (time.perf_counter() - t0))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        b *= 2
    return best


def slug(text: str) -> str:
    """Folder-safe name of a model (its folder name for paths) or method."""
    return re.sub(r"[^a-zA-Z0-9]+", "-", Path(text).name if "/" in text else text).strip("-").lower()


def run_perf(plan: Plan) -> tuple[list[dict], dict]:
    """Run the perf protocol on every backbone of ``plan``; returns (rows, details for ``benchmark.json``)."""

    cfg = plan.config
    device = resolve_device(cfg.device)
    rows, details = [], {"backbones": {}}
    for model in plan.models:
        log.info("[perf] loading %s on %s", model, device)
        pipe = load_pipeline(model, device=device)
        pixel = isinstance(pipe, PixelPipeline)
        if pixel:
            names = {a.name for a in plan.arms}
            arms = tuple(a for a in PIXEL_PERF_ARMS if a.name in names or not cfg.methods) or PIXEL_PERF_ARMS
            n = pipe.num_classes
            null = pipe.components.null_class_label
            items = [c for c in range(n) if c != null][: plan.prompts] if n else [None]
        else:
            arms, items = plan.arms, class_prompts(plan.prompts)
        run_root = Path(plan.out) / "runs" / slug(model)
        details["backbones"][model] = {"family": pipe.components.family, "folder": str(run_root), "items": items}
        jobs = [(i, s) for i in range(len(items)) for s in plan.seeds]
        for arm in arms:
            params = plan.arm_params(arm)
            whole = get_method(arm.method).whole_prompt_batches
            row = {"backbone": model, "family": pipe.components.family, "arm": arm.name, "method": arm.method,
                   "device": device, "images": len(jobs), "batch": cfg.batch_size if not whole else len(plan.seeds)}
            try:
                row.update(_measure(pipe, arm, params, items, jobs, whole, plan, device, run_root / slug(arm.name)))
            except MinorityError as err:
                log.warning("[perf] %s on %s failed: %s", arm.name, model, err)
                row["error"] = str(err)
            rows.append(row)
        base = next((r for r in rows if r["backbone"] == model and r["method"] == "ddim" and "error" not in r), None)
        for r in rows:
            if r["backbone"] == model and base and "seconds_per_image" in r:
                r["ratio_to_ddim"] = r["seconds_per_image"] / base["seconds_per_image"]
        del pipe
    return rows, details


def _warm_steps(arm: Arm, params: dict) -> int:
    """Steps of a warm-up call: 2, or the method's minimum (Boost-and-Skip runs only on more than Δt steps)."""
    return max(2, make_method(arm.method, params).min_steps())


def _measure(pipe, arm: Arm, params: dict, items: list, jobs: list, whole: bool, plan: Plan, device: str,
             run_dir: Path) -> dict:
    cfg = plan.config
    batches = _batches(jobs, cfg.batch_size, whole)
    first = batches[0]
    log.info("[perf] %s: warm-up, then %d images in %d batches", arm.name, len(jobs), len(batches))
    _call(pipe, [items[i] for i, _ in first], [s for _, s in first], arm, params, _warm_steps(arm, params),
          cfg.guidance)
    per_image, outputs, fwd, bwd, calls = [], [], [], [], []
    with PeakMemory(device) as mem:
        for batch in batches:
            with PassCounter(pipe.components.unet) as counter:
                _sync(device)
                t0 = time.perf_counter()
                out = _call(pipe, [items[i] for i, _ in batch], [s for _, s in batch], arm, params, plan.steps,
                            cfg.guidance)
                _sync(device)
                dt = time.perf_counter() - t0
            per_image.append(dt / len(batch))
            outputs.append((batch, out))
            fwd.append(out.settings["unet_calls"])
            bwd.append(counter.unet_backward)
            calls.append(counter.backward_calls)
    sm = summarize(per_image)
    res = {"steps": outputs[0][1].settings["steps"], "guidance": outputs[0][1].settings["guidance"],
           "seconds_per_image": sm.mean, "seconds_per_image_ci_low": sm.ci95[0] if sm.ci95 else "",
           "seconds_per_image_ci_high": sm.ci95[1] if sm.ci95 else "", "timed_batches": len(batches),
           "peak_memory_mb": mem.peak_mb, "memory_kind": mem.kind,
           "unet_forward_per_batch": sum(fwd) / len(fwd), "unet_backward_per_batch": sum(bwd) / len(bwd),
           "backward_calls_per_batch": sum(calls) / len(calls)}
    if str(device).startswith("cuda"):
        res["max_batch"], res["images_per_second"] = _throughput(pipe, items[0], arm, params, plan.steps,
                                                                 cfg.guidance, device, cfg.max_batch)
    _save(outputs, items, run_dir, arm)
    return res


def _save(outputs: list, items: list, run_dir: Path, arm: Arm) -> None:
    """Write the timed images as a generation-like folder (``images/`` + ``manifest.jsonl``) for the grid."""
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    manifest = run_dir / "manifest.jsonl"
    manifest.unlink(missing_ok=True)
    for batch, out in outputs:
        for (pi, seed), img in zip(batch, out.images):
            label = items[pi] if not isinstance(items[pi], str) else None
            rel = f"images/{image_name(pi, seed)}"
            save_image_atomic(img, run_dir / rel)
            append_jsonl(manifest, {"file": rel, "prompt": items[pi] if label is None else None, "prompt_index": pi,
                                    "seed": seed, **({"class_label": label} if label is not None else {}),
                                    "method": arm.method})
