"""Progress of a (possibly multi-process) generation: one overall bar on the main process, a log file per
process, and the final summary line.

The main process counts the other processes' finished images from the lines they append to their manifest
shards (read incrementally), so no collective communication is needed while images are generated.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path


class ShardCounter:
    """Counts the lines of a set of growing files (each call reads only the bytes appended since the last)."""

    def __init__(self, paths: list[Path]):
        self._offsets = {Path(p): 0 for p in paths}
        self._lines = dict.fromkeys(self._offsets, 0)

    def count(self) -> int:
        """Newlines appended so far, over all files."""
        for p, off in self._offsets.items():
            try:
                with open(p, "rb") as f:
                    f.seek(off)
                    data = f.read()
            except OSError:
                continue
            self._lines[p] += data.count(b"\n")
            self._offsets[p] = off + len(data)
        return sum(self._lines.values())


class OverallProgress:
    """``images done / total``, images per second and ETA over all processes (drawn by the main process only).

    The other processes' images are read from their shards whenever this process finishes a batch and, in a
    background thread, every ``interval`` seconds (this process may be inside a long batch, or done with its
    share and waiting for the others); :meth:`close` counts once more, so the bar ends at everyone's total.

    Args:
        total: images of the whole run.
        done: images already complete before this run started (resume).
        others: manifest shards of the other processes (their new lines count as done images).
        enabled: draw a bar (main process with ``progress=True``).
        desc: bar label.
        interval: seconds between background refreshes (0: none).
    """

    def __init__(self, total: int, done: int, others: list[Path], enabled: bool, desc: str = "generate",
                 interval: float = 1.0):
        self.total, self.done0, self.own = total, done, 0
        self.n = done  # images done over all processes, as last drawn
        self._others = ShardCounter(others)
        self._bar = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=desc, unit="img", dynamic_ncols=True)
            if others and interval > 0:
                self._thread = threading.Thread(target=self._tick, args=(interval,), daemon=True,
                                                name="minority-progress")
                self._thread.start()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()

    def refresh(self) -> None:
        """Redraw with this process's count plus the lines the other processes appended."""
        with self._lock:
            if self._bar is not None:
                self.n = min(self.total, self.done0 + self.own + self._others.count())
                self._bar.update(self.n - self._bar.n)

    def advance(self, n: int) -> None:
        """This process finished ``n`` more images; refresh the bar with everyone's count."""
        self.own += n
        self.refresh()

    def close(self) -> None:
        """Stop refreshing, count the other processes' lines a last time and close the bar (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self.refresh()
            self._bar.close()
            self._bar = None


class ProcessLog:
    """Appends timestamped lines to ``OUT/logs/generate.rank{r}.log`` (one file per process)."""

    def __init__(self, out: Path, rank: int):
        self.path = Path(out) / "logs" / f"generate.rank{rank}.log"
        self.rank = rank
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            self.path = None

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{stamp} [rank {self.rank}] {message}\n")
        except OSError:
            pass  # a log line is never worth failing a generation for


@dataclass
class GenerateResult:
    """What a ``minority generate`` run did.

    Attributes:
        out: output folder.
        total: images of the whole run; skipped: complete before this run (``--resume``); generated: made now
        (by all processes); processes: number of processes; seconds: wall time; generate_seconds and
        write_seconds: this process's time in the pipeline and in writing files (images, tokens, manifest lines);
        interrupted: stopped early (Ctrl-C) — finish with ``--resume``; rank: the process that returned it.
    """

    out: Path
    total: int
    skipped: int
    generated: int
    processes: int = 1
    seconds: float = 0.0
    generate_seconds: float = 0.0
    write_seconds: float = 0.0
    interrupted: bool = False
    rank: int = 0

    def summary(self) -> str:
        """One line: totals, processes, wall time and throughput."""
        rate = self.generated / self.seconds if self.seconds > 0 else 0.0
        skipped = f", {self.skipped} already complete" if self.skipped else ""
        procs = f" with {self.processes} processes" if self.processes > 1 else ""
        return (f"Wrote {self.generated} images{skipped} ({self.skipped + self.generated}/{self.total} done){procs} "
                f"in {self.seconds:.1f} s ({rate:.2f} images/s) to {self.out / 'images'} "
                f"(manifest: {self.out / 'manifest.jsonl'})")
