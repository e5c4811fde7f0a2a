"""``minority generate --num-processes N``: re-run the same command under ``accelerate launch`` with N processes.

``accelerate launch --cpu`` starts a single process (multi-CPU needs MPI), so the processes are always started
with accelerate's torchrun launcher (``--multi_gpu``); on a machine without CUDA (or with ``--device cpu``) each
process then joins a gloo group on the CPU (:func:`minority.runs.distributed.process_context`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

import torch

from minority.errors import MinorityError


def argv_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, drop: tuple[str, ...] = ()) -> list[str]:
    """The command-line arguments that reproduce ``args`` (options left at their default are omitted).

    Args:
        parser: the (sub-)parser that produced ``args``.
        args: its parsed namespace.
        drop: destinations to leave out (e.g. ``("num_processes",)``).
    """
    argv: list[str] = []
    positionals: list[str] = []
    for action in parser._actions:
        if action.dest in drop or action.dest == "help" or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if not action.option_strings:
            positionals += [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        if value == action.default or value is None:
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):  # option_strings: ["--x", "--no-x"]
            argv.append(action.option_strings[0] if value else action.option_strings[1])
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    if positionals:
        argv += ["--", *positionals] if any(p.startswith("-") for p in positionals) else positionals
    return argv


def accelerate_command(num_processes: int, script_args: list[str], port: int = 0) -> list[str]:
    """``python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m minority <script_args>``."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", "minority", *script_args]


def launch_processes(num_processes: int, script_args: list[str], device: str = "auto") -> int:
    """Run ``minority <script_args>`` in ``num_processes`` processes; returns the launcher's exit status.

    On the CPU each process gets ``cpu_count // N`` threads (unless ``OMP_NUM_THREADS`` is set).
    """
    if num_processes < 2:
        raise MinorityError(f"--num-processes must be >= 2 to launch processes (got {num_processes}).")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MinorityError(f"--device {device} asked for CUDA, but no CUDA device is available: use --device cpu.")
    on_cpu = device == "cpu" or not torch.cuda.is_available()
    if not on_cpu and torch.cuda.device_count() < num_processes:
        raise MinorityError(f"--num-processes {num_processes} needs that many GPUs ({torch.cuda.device_count()} "
                            "visible): lower it, or pass --device cpu.")
    env = dict(os.environ)
    if on_cpu:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    cmd = accelerate_command(num_processes, script_args)
    sys.stderr.write(f"launching: {shlex.join(cmd[2:])}\n")
    sys.stderr.flush()
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the processes got the same Ctrl-C: let them finish their batch
            continue
