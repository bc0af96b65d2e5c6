"""Batched greedy generation for ``vila-ros eval``: deduplicated prompts over encoded frames, answered in batches.

A prompt is a question and a tuple of (case index, grid frame) keys into the encoded frames; the same prompt over
the same frames is asked once (a clip's alert is also one of its frames-to-alert windows). Prompts are grouped by
kind (caption, alert, qa: each has its token budget) and image count, and sorted by question length in a fixed
order, so the batches and therefore the answers depend only on the seeds, not on timing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass
class Request:
    """One prompt over encoded frames; ``result`` is the engine's generation once answered."""
    question: str
    frames: tuple  # ((case index, grid frame), ...)
    kind: str  # caption | alert | qa
    result: Any = None


class Requests:
    """Deduplicated prompts (the clip's alert is one of its windows; the single frame's alert one of the frames)."""

    def __init__(self) -> None:
        self.items: dict[tuple, Request] = {}

    def add(self, question: str, frames: Iterable[tuple[int, int]], kind: str) -> tuple:
        frames = tuple(frames)
        key = (question, frames)
        self.items.setdefault(key, Request(question, frames, kind))
        return key

    def text(self, key: tuple) -> str:
        return self.items[key].result.text.strip()

    def prompt_tokens(self, key: tuple) -> int:
        return int(self.items[key].result.prompt_tokens)


def engine_image_size(engine: Any, default: int = 112) -> int:
    """The square frame size the engine's vision tower takes (``default`` when the engine does not say)."""
    config = getattr(getattr(engine, "model", None), "config", None)
    return int(getattr(config, "image_size", default) or default)


def generate_answers(engine: Any, requests: list[Request], features: dict, batch_size: int,
                     max_new_tokens: dict[str, int]) -> int:
    """Greedy answers for ``requests``, batched by (kind, image count) in a fixed order; returns batches run."""
    from vila_ros.engine import GenerationConfig

    groups: dict[tuple, list[Request]] = {}
    for r in requests:
        groups.setdefault((r.kind, len(r.frames)), []).append(r)
    batches = 0
    for (kind, _), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        config = GenerationConfig(max_new_tokens=max_new_tokens[kind], temperature=0.0)
        rows = sorted(rows, key=lambda r: len(r.question))  # similar lengths: little left padding
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            feats = [[features[f] for f in r.frames] for r in chunk]
            if hasattr(engine, "generate_batch") and len(chunk) > 1:
                results = engine.generate_batch([r.question for r in chunk], feats, config)
            else:
                results = [engine.generate(r.question, f, config) for r, f in zip(chunk, feats)]
            for r, res in zip(chunk, results):
                r.result = res
            batches += 1
    return batches
