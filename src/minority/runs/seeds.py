"""Parsing of seed lists: ``"0-7"``, ``"0,3,5"``, ``"0-3,10,20-21"``."""

from __future__ import annotations

from minority.errors import MinorityError


def parse_seeds(spec: str) -> list[int]:
    """Parse a seed specification into a list of non-negative ints (order kept, duplicates rejected)."""
    seeds: list[int] = []
    try:
        for part in str(spec).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise MinorityError(f"Malformed seeds {spec!r}: use a range like 0-7, a list like 0,3,5, or both (0-3,10).") from None
    if not seeds or min(seeds) < 0:
        raise MinorityError(f"Seeds must be non-negative integers (got {spec!r}).")
    if len(set(seeds)) != len(seeds):
        raise MinorityError(f"Seeds {spec!r} contain duplicates: each (prompt, seed) pair names one image.")
    return seeds
