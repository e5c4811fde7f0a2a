"""Graceful stop: the first Ctrl-C (SIGINT) or SIGTERM asks the generation loop to stop after the current batch;
a second Ctrl-C stops at once (``KeyboardInterrupt``). Files written so far are complete either way."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("minority")


class StopRequest:
    """Set by the signal handler; the loop checks :attr:`requested` between batches."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    @property
    def exit_code(self) -> int:
        """The shell's status for the stopping signal: 128 + signal number (SIGINT 130, SIGTERM 143)."""
        return 128 + int(self.signum or signal.SIGINT)


@contextmanager
def graceful_stop(announce: bool = True) -> Iterator[StopRequest]:
    """Install SIGINT/SIGTERM handlers for the ``with`` block (main thread only; elsewhere a no-op)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.requested = True
        stop.signum = stop.signum or signum
        if announce:
            log.warning("Stopping after the current batch (press Ctrl-C again to stop at once)...")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
