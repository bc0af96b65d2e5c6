"""What the benchmarks share: a timed greedy-decode session and the JSON + markdown report writer."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable


def synthetic_prompt(engine: Any, question: str = "Describe the scene in detail.") -> tuple[Any, Any]:
    """(prompt ids, features of one random frame): the same spliced prompt for every engine of a run."""
    import numpy as np

    from vila_ros.engine.types import GenerationConfig

    size = engine.model.config.image_size
    frame = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    features = engine.encode_frames([frame])
    ids = engine.prompt_ids(question, 1, GenerationConfig(use_prefix_cache=False))
    return ids, features


def decode_session(engine: Any, ids: Any, features: Any,
                   new_tokens: int) -> tuple[Callable[[], float], float, list[int]]:
    """Prefill the prompt once (timed: the time to first token from embeddings); return a function that
    restores the prompt's KV and times ``new_tokens`` greedy steps (no stop ids), that prefill time, and the tokens.

    Restoring instead of re-prefilling keeps each timed repeat to decode alone, so decode tok/s is
    (new_tokens - 1) / time: the first token comes from the prefill logits.
    """
    import torch

    from vila_ros.engine.types import GenerationConfig

    embeds = engine.embed(ids, features)[None]
    config = GenerationConfig(max_new_tokens=new_tokens)
    with torch.inference_mode():
        started = time.perf_counter()
        logits, cache = engine.prefill(embeds, max_new_tokens=new_tokens)
        prefill_s = time.perf_counter() - started
        snapshot = cache.snapshot(embeds.shape[1])

    def greedy() -> list[int]:
        return engine.decode(cache, logits, config, stop_ids=(), stop_strings=()).token_ids

    @torch.inference_mode()
    def timed_decode() -> float:
        cache.restore(snapshot)
        t0 = time.perf_counter()
        greedy()
        return time.perf_counter() - t0

    with torch.inference_mode():
        cache.restore(snapshot)
        tokens = greedy()  # warm-up + outputs
    return timed_decode, prefill_s, tokens


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, rows)
    else:
        rows.append((prefix, json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)))


def markdown_report(title: str, report: dict[str, Any], headline: dict[str, Any] | None = None) -> str:
    """A readable page of one bench run: the headline figures first, then every field of the JSON."""
    lines = [f"# {title}", ""]
    if headline:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in headline.items()]
        lines.append("")
    rows: list[tuple[str, str]] = []
    _flatten("", report, rows)
    lines += ["<details><summary>all fields</summary>", "", "| field | value |", "|---|---|"]
    lines += [f"| `{name}` | {value} |" for name, value in rows]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_report(json_path: str | Path, report: dict[str, Any], title: str,
                 headline: dict[str, Any] | None = None) -> Path:
    """Write the JSON and, beside it, the same run as markdown (``.md``); print the JSON; return the .md path."""
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    markdown = path.with_suffix(".md")
    markdown.write_text(markdown_report(title, report, headline))
    print(json.dumps(report))
    return markdown


def cpu_kernels_status() -> str:
    """For every report: whether our compiled CPU kernels ran ("vila_ros") or aten's did, and why."""
    from vila_ros.kernels import cpu_kernels, unavailable_reason

    return "vila_ros" if cpu_kernels() is not None else f"aten ({unavailable_reason()})"
