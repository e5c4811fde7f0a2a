"""Deterministic split of a generation into (prompt_index, seed) jobs, work units, process shards and batches.

A *unit* is one job, or for methods with ``whole_prompt_batches`` (objectives over a prompt's images) all jobs
of one prompt. Units are dealt round-robin to processes by their index (unit k -> rank k % world), so every
process can compute its share without communication; per-image generators (SPEC §3.4) make each image
identical to the single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple


class Job(NamedTuple):
    """One image: the item (prompt or class label) index and the seed."""

    prompt_index: int
    seed: int


def plan_jobs(n_items: int, seeds: Sequence[int], item_seeds: Sequence[int | None] = ()) -> list[Job]:
    """Every (item, seed) job in order; ``item_seeds[i]`` (if not None) replaces ``seeds`` for item i."""
    jobs = []
    for i in range(n_items):
        own = item_seeds[i] if i < len(item_seeds) else None
        jobs.extend(Job(i, int(s)) for s in ((own,) if own is not None else seeds))
    return jobs


def work_units(jobs: Sequence[Job], whole_groups: bool) -> list[list[Job]]:
    """Single jobs, or (``whole_groups``) one unit per prompt holding all its jobs, in first-seen order."""
    if not whole_groups:
        return [[j] for j in jobs]
    groups: dict[int, list[Job]] = {}
    for j in jobs:
        groups.setdefault(j.prompt_index, []).append(j)
    return list(groups.values())


def shard_units(units: Sequence[list[Job]], rank: int, world: int) -> list[list[Job]]:
    """The units of process ``rank`` out of ``world``: round-robin by unit index."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    return [u for k, u in enumerate(units) if k % world == rank]


def make_batches(units: Sequence[list[Job]], batch_size: int, whole_groups: bool,
                 key: Callable[[Job], Hashable] | None = None) -> list[list[Job]]:
    """Pipeline batches: with ``whole_groups`` one unit per batch; else up to ``batch_size`` consecutive jobs,
    starting a new batch whenever ``key(job)`` changes (jobs that must not share a pipeline call)."""
    if whole_groups:
        return [list(u) for u in units]
    batches: list[list[Job]] = []
    current: list[Job] = []
    for j in (j for u in units for j in u):
        if current and (len(current) == batch_size or (key is not None and key(j) != key(current[0]))):
            batches.append(current)
            current = []
        current.append(j)
    if current:
        batches.append(current)
    return batches
