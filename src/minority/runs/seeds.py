"""Parsing and checking of seeds: ``"0-7"``, ``"0,3,5"``, ``"0-3,10,20-21"``.

Ranges are parsed into ``(first, last)`` pairs and counted before anything is expanded, so an absurd range
(``0-99999999999``) is refused with a message instead of exhausting memory. A seed is what
``torch.Generator.manual_seed`` accepts without wrapping: ``0 <= seed < 2**64``.
"""

from __future__ import annotations

from collections.abc import Iterable

from minority.errors import MinorityError

#: largest seed + 1 (``torch.Generator.manual_seed`` takes unsigned 64-bit values).
SEED_LIMIT = 2**64
#: most images (prompt × seed jobs) one run may hold; larger runs are split into several --out folders.
MAX_IMAGES = 10_000_000

_SYNTAX = "use a range like 0-7, a list like 0,3,5, or both (0-3,10)"


def seed_ranges(spec: str) -> list[tuple[int, int]]:
    """``(first, last)`` pairs (inclusive) of a seed specification, checked but not expanded."""
    ranges: list[tuple[int, int]] = []
    try:
        for part in str(spec).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
            else:
                lo = hi = int(part)
            ranges.append((lo, hi))
    except ValueError:
        raise MinorityError(f"Malformed seeds {spec!r}: {_SYNTAX}.") from None
    if not ranges or min(lo for lo, _ in ranges) < 0:
        raise MinorityError(f"Seeds must be non-negative integers (got {spec!r}).")
    if max(hi for _, hi in ranges) >= SEED_LIMIT:
        raise MinorityError(f"Seed {max(hi for _, hi in ranges)} in {spec!r} is too large: seeds go from 0 to "
                            f"{SEED_LIMIT - 1} (2^64 - 1).")
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > MAX_IMAGES:
        raise MinorityError(f"Seeds {spec!r} name {count:,} seeds; one run makes at most {MAX_IMAGES:,} images: "
                            "split the seeds over several runs (each with its own --out).")
    return ranges


def parse_seeds(spec: str) -> list[int]:
    """Parse a seed specification into a list of non-negative ints (order kept, duplicates rejected)."""
    seeds = [s for lo, hi in seed_ranges(spec) for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise MinorityError(f"Seeds {spec!r} contain duplicates: each (prompt, seed) pair names one image.")
    return seeds


def seed_run(first: int, count: int) -> list[int]:
    """``--seed FIRST --images-per-prompt COUNT``: seeds FIRST..FIRST+COUNT-1, checked before expanding."""
    if first < 0:
        raise MinorityError(f"--seed must be >= 0 (got {first}).")
    if count < 1:
        raise MinorityError(f"--images-per-prompt must be >= 1 (got {count}).")
    if count > MAX_IMAGES:
        raise MinorityError(f"--images-per-prompt {count:,} is more than the {MAX_IMAGES:,} images one run makes: "
                            "split it over several runs (each with its own --out and --seed).")
    if first + count > SEED_LIMIT:
        raise MinorityError(f"--seed {first} with --images-per-prompt {count} goes past the largest seed, "
                            f"{SEED_LIMIT - 1} (2^64 - 1): lower --seed.")
    return list(range(first, first + count))


def check_seed_values(seeds: Iterable, what: str = "seed") -> None:
    """Every seed is an int with ``0 <= seed < 2**64`` (raises :class:`MinorityError` naming the first bad one)."""
    for s in seeds:
        if s is None:
            continue
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT:
            raise MinorityError(f"Bad {what} {s!r}: seeds are integers from 0 to {SEED_LIMIT - 1} (2^64 - 1).")


def check_run_size(n_items: int, seeds, item_seeds=()) -> int:
    """The number of images of a run (items × seeds, an item's own seed counting once), refused above
    :data:`MAX_IMAGES` before any job is planned. Seeds are checked too (:func:`check_seed_values`)."""
    own = sum(1 for s in item_seeds if s is not None)
    total = own + (n_items - own) * len(seeds)
    if total > MAX_IMAGES:
        raise MinorityError(f"This run would make {total:,} images ({n_items:,} prompts × {len(seeds):,} seeds); one "
                            f"run makes at most {MAX_IMAGES:,}: split the prompts or seeds over several runs "
                            "(each with its own --out).")
    check_seed_values(seeds)
    check_seed_values(item_seeds, "per-prompt seed")
    return total
