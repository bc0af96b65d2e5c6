"""Seed splits: train, val and test scenarios come from disjoint ranges of seeds, so no held-out world is trained on.
The stream splits (``stream_val`` for choosing alert thresholds, ``stream_test`` held out) have ranges of their own:
a stream's scenes are seeded ``stream_segment_seed(split, stream, segment)``, inside its split's range.
"""
from __future__ import annotations

_SPLIT_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000, "stream_val": 30_000_000,
               "stream_test": 40_000_000}
_SPLIT_SIZE = 10_000_000
STREAM_SPLITS = ("stream_val", "stream_test")
_SEGMENTS_PER_STREAM = 1000


def split_seeds(split: str, n: int, offset: int = 0) -> list[int]:
    """``n`` seeds of a split; the ranges of train, val and test never overlap."""
    if split not in _SPLIT_BASE:
        raise ValueError(f"unknown split {split!r} ({', '.join(_SPLIT_BASE)})")
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


def stream_segment_seed(split: str, stream: int, segment: int) -> int:
    """Scenario seed of scene ``segment`` of stream number ``stream`` of a stream split."""
    if split not in STREAM_SPLITS:
        raise ValueError(f"unknown stream split {split!r} ({', '.join(STREAM_SPLITS)})")
    if not 0 <= segment < _SEGMENTS_PER_STREAM or not 0 <= stream < _SPLIT_SIZE // _SEGMENTS_PER_STREAM:
        raise ValueError("stream split range exhausted")
    return _SPLIT_BASE[split] + stream * _SEGMENTS_PER_STREAM + segment
