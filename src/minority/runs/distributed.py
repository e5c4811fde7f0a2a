"""Which process am I? A thin layer over ``accelerate.PartialState`` for multi-process / multi-GPU runs.

Under ``accelerate launch`` (or ``torchrun``) each process gets its rank, the world size and its own device
(``--device auto``: ``cuda:<local rank>`` when CUDA is available, else the CPU with the gloo backend). A plain
``minority generate`` is one process and never touches ``torch.distributed``.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch

from minority.errors import MinorityError

log = logging.getLogger("minority")

BARRIER_TIMEOUT_HOURS = 12


def launched_distributed() -> bool:
    """True inside a multi-process launch (``WORLD_SIZE`` > 1, as set by torchrun / accelerate / MPI)."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def single_process_cpu_launch() -> bool:
    """``accelerate launch --cpu --num_processes N`` (N > 1, no MPI) starts only one process: detect it."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return use_cpu and "MASTER_ADDR" in os.environ and not launched_distributed()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; checks that an explicit CUDA device exists."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MinorityError(f"--device {device} asked for CUDA, but no CUDA device is available: use --device cpu.")
    return device


@dataclass
class ProcessContext:
    """This process's place in the run.

    Attributes:
        rank: process index (0 = main process: merges manifests, draws the progress bar).
        world: number of processes.
        device: torch device string for this process's pipeline.
    """

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    _state: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (no-op for one process)."""
        if self.world > 1:
            self._state.wait_for_everyone()

    def close(self) -> None:
        """Tear down the process group (multi-process runs)."""
        if self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def process_context(device: str = "auto") -> ProcessContext:
    """The :class:`ProcessContext` of this process; ``device`` is the ``--device`` value."""
    if single_process_cpu_launch():
        log.warning("accelerate launch --cpu starts a single process (multi-CPU needs MPI): this run is not sharded. "
                    "Use `minority generate --num-processes N`, or `accelerate launch --multi_gpu --num_processes N`.")
    if not launched_distributed():
        return ProcessContext(device=resolve_device(device))
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    if not cpu:
        resolve_device(device)
    # processes wait for each other at the start and the end only; allow long runs with uneven shards
    state = PartialState(cpu=cpu, timeout=datetime.timedelta(hours=BARRIER_TIMEOUT_HOURS))
    if cpu:
        dev = "cpu"
    elif device in ("auto", "cuda"):
        dev = str(state.device)  # one GPU per process
    else:
        dev = device  # an explicit cuda:N is honoured as given
    return ProcessContext(rank=state.process_index, world=state.num_processes, device=dev, _state=state)
