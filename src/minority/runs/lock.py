"""One writer per output folder: an advisory lock file ``OUT/.minority.lock``.

The lock is an ``fcntl.flock`` on the open file, so the operating system drops it when its process ends in any
way (SIGKILL included): a lock file left by a killed run is stale and simply taken over. The file holds the
holder's pid, host, start time and a token, which a second writer's error message names.

Multi-process runs hold one lock: ``minority generate --num-processes N`` takes it in the launching process and
hands its token to the ranks in ``MINORITY_RUN_LOCK``; under a bare ``accelerate launch`` the main process
(rank 0) takes it. Other ranks never lock. Platforms without ``fcntl`` (Windows) run without the lock.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from minority.errors import MinorityError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("minority")

LOCK_NAME = ".minority.lock"
ENV_TOKEN = "MINORITY_RUN_LOCK"


def lock_path(out: str | Path) -> Path:
    return Path(out) / LOCK_NAME


def read_holder(out: str | Path) -> dict:
    """What the lock file says about its holder (empty when unreadable)."""
    try:
        info = json.loads(lock_path(out).read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another minority run"
    return (f"another minority run (pid {info['pid']} on {info.get('host', '?')}, "
            f"started {info.get('started', '?')})")


class RunLock:
    """The held lock of one output folder; :meth:`release` (or the end of the process) frees it."""

    def __init__(self, out: str | Path, fd: int | None, token: str):
        self.path, self._fd, self.token = lock_path(out), fd, token

    @classmethod
    def acquire(cls, out: str | Path) -> RunLock:
        """Take the lock of ``out`` (an existing folder) or raise :class:`MinorityError` naming its holder."""
        out = Path(out)
        token = uuid.uuid4().hex
        if fcntl is None:  # pragma: no cover
            return cls(out, None, token)
        path = lock_path(out)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise MinorityError(f"Cannot create the lock file {path} ({err.strerror}): choose another --out.") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    log.warning("Cannot lock %s (%s): this file system has no file locks; make sure no other run "
                                "writes into %s.", path, err.strerror, out)
                    return cls(out, None, token)
                raise MinorityError(
                    f"{out} is in use by {_describe(read_holder(out))}: wait for it to finish or stop it, or choose "
                    f"another --out (two runs in one folder would mix their images; lock file {path}).") from None
            try:  # the holder we waited for may have removed the file: lock the file that is there now
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "token": token}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        return cls(out, fd, token)

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # before unlocking: a waiter that opened the old file sees it is gone
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Borrowed:
    """The lock held by the launching process of a multi-process run (nothing to release here)."""

    def release(self) -> None:
        pass


def lock_for_process(out: str | Path, is_main: bool):
    """The lock this process of a run needs: the main process takes it (unless the process that launched the
    ranks holds it for them); other ranks none. Returns an object with ``release()``."""
    token = os.environ.get(ENV_TOKEN)
    if not is_main or (token and read_holder(out).get("token") == token):
        return _Borrowed()
    return RunLock.acquire(out)


@contextlib.contextmanager
def lock_for_launch(out: str | Path) -> Iterator[RunLock]:
    """Hold the lock of ``out`` while launching ranks, which find its token in ``MINORITY_RUN_LOCK``."""
    before = os.environ.get(ENV_TOKEN)
    with RunLock.acquire(out) as lock:
        os.environ[ENV_TOKEN] = lock.token
        try:
            yield lock
        finally:
            if before is None:
                os.environ.pop(ENV_TOKEN, None)
            else:
                os.environ[ENV_TOKEN] = before
