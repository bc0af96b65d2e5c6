"""Seed splits: train, val and test scenarios come from disjoint ranges of seeds, so no held-out world is trained on.
"""
from __future__ import annotations

_SPLIT_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
_SPLIT_SIZE = 10_000_000


def split_seeds(split: str, n: int, offset: int = 0) -> list[int]:
    """``n`` seeds of a split; the ranges of train, val and test never overlap."""
    if split not in _SPLIT_BASE:
        raise ValueError(f"unknown split {split!r} (train, val, test)")
    if n < 0 or offset < 0 or offset + n > _SPLIT_SIZE:
        raise ValueError("split range exhausted")
    base = _SPLIT_BASE[split] + offset
    return list(range(base, base + n))


def split_of(seed: int) -> str:
    """The split whose range holds ``seed``."""
    for name, base in _SPLIT_BASE.items():
        if base <= seed < base + _SPLIT_SIZE:
            return name
    raise ValueError(f"seed {seed} is in no split")
