"""``vila-ros bench prefix``: time to first token with a fixed system prompt + few-shot examples, prefix cache on/off.

The system text (instructions and few-shot examples) sits before the first image, so it is the engine's prefix-cache
key. Both sides get the same precomputed frame features (vision time excluded) and the same question; time to first
token = wall time of ``generate(max_new_tokens=1)``. The cached side is warmed once (that call fills the cache), then
runs alternate between cached and uncached. Greedy outputs of ``--new-tokens`` tokens are compared for identity.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

SYSTEM = (
    "You are the perception module of a mobile robot. Describe what the camera sees in one short sentence: "
    "name people, vehicles, obstacles and hazards, where they are, and whether they move. Never guess.\n"
    "Examples:\n"
)
FEW_SHOT = (
    ("a corridor with a wet floor sign", "A yellow wet-floor sign stands in the middle of an empty corridor."),
    ("a loading dock", "A forklift carrying a pallet reverses out of the loading dock on the left."),
    ("an office", "Two people sit at desks on the right; a chair blocks the aisle ahead."),
    ("a parking lot at night", "A car with its headlights on drives toward the robot from the far end."),
    ("a warehouse aisle", "Boxes have fallen from the top shelf and cover half of the aisle."),
    ("a kitchen", "A person carries a tray of cups past the counter, moving left."),
)


def system_prompt(shots: int) -> str:
    return SYSTEM + "".join(f"Scene: {scene}\nDescription: {text}\n" for scene, text in FEW_SHOT[:shots])


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("prefix", help="time to first token, prefix cache on vs off")
    p.add_argument("--model", required=True, help="VILA1.5 checkpoint directory")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--frames", type=int, default=1, help="images after the prefix")
    p.add_argument("--shots", type=int, default=len(FEW_SHOT),
                   help=f"few-shot examples (max {len(FEW_SHOT)}; fewer if the model's context is too short)")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens generated for the identity check")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vila_ros.bench.common import cpu_kernels_status
    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.engine.types import GenerationConfig
    from vila_ros.model.prompt import text_prefix

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = TorchEngine.from_dir(args.model, precision=args.precision)
    size = engine.model.config.image_size
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.frames)]
    features = engine.encode_frames(frames)
    question = "Describe the scene."
    shots = min(args.shots, len(FEW_SHOT))
    while True:  # the most examples (up to --shots) that leave room for the generated tokens
        system = system_prompt(shots)
        ids = engine.prompt_ids(question, len(features), GenerationConfig(system_prompt=system))
        positions = len(ids) - len(features) + len(features) * engine.tokens_per_image
        if positions + args.new_tokens <= engine.decoder.max_positions or shots == 0:
            break
        shots -= 1

    def config(cached: bool, n: int) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=n, system_prompt=system, use_prefix_cache=cached)

    prefix_len = len(text_prefix(ids))

    def ttft(cached: bool) -> float:
        t0 = time.perf_counter()
        result = engine.generate(question, features, config(cached, 1))
        elapsed = time.perf_counter() - t0
        if cached and result.cached_prefix_tokens != min(prefix_len, len(ids) - 1):
            raise RuntimeError(f"prefix cache missed: {result.cached_prefix_tokens} of {prefix_len} positions")
        return elapsed * 1000.0

    # Warm-up: one uncached call, one cached call that fills the cache.
    ttft(False)
    engine.generate(question, features, config(True, 1))
    on, off = [], []
    for _ in range(args.repeats):  # alternate so background load affects both alike
        on.append(ttft(True))
        off.append(ttft(False))
    out_on = engine.generate(question, features, config(True, args.new_tokens))
    out_off = engine.generate(question, features, config(False, args.new_tokens))
    med_on, med_off = statistics.median(on), statistics.median(off)
    report = {
        "model": engine.model_id,
        "precision": args.precision,
        "prompt_positions": out_off.prompt_tokens,
        "prefix_tokens": prefix_len,
        "cached_prefix_tokens": out_on.cached_prefix_tokens,
        "frames": args.frames, "tokens_per_image": engine.tokens_per_image, "few_shot_examples": shots,
        "max_positions": engine.decoder.max_positions,
        "repeats": args.repeats,
        "ttft_ms": {
            "cached": {"median": round(med_on, 3), "min": round(min(on), 3), "max": round(max(on), 3)},
            "uncached": {"median": round(med_off, 3), "min": round(min(off), 3), "max": round(max(off), 3)},
        },
        "speedup": round(med_off / med_on, 3),
        "cached_over_uncached": round(med_on / med_off, 3),
        "outputs_identical": out_on.token_ids == out_off.token_ids and out_on.text == out_off.text,
        "new_tokens": args.new_tokens,
        "output_text": out_off.text,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "cpu_kernels": cpu_kernels_status(),
        "versions": {"torch": torch.__version__},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("model", "prefix_tokens", "prompt_positions", "ttft_ms", "speedup",
                                             "outputs_identical")}))
    return 0 if report["outputs_identical"] else 1
