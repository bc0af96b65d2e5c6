"""``vila-ros bench serve``: requests/s and p50/p99 latency of `vila-ros serve` for 1, 4 and 8 concurrent clients
(the official openai client over loopback HTTP) vs one in-process engine answering the same requests in turn.

Every request is the same kind of work: ``--frames`` JPEG frames and a question, greedy, ``--new-tokens`` tokens.
The in-process side gets the same decoded frames, so the difference is HTTP, JPEG and the server's batching.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import statistics
import time
from typing import Any


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("serve", help="vila-ros serve throughput/latency vs in-process")
    p.add_argument("--model", default="", help="checkpoint directory (default: the embedded default model)")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--clients", default="1,4,8", help="concurrent client counts")
    p.add_argument("--requests", type=int, default=16, help="requests per client count")
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    p.set_defaults(func=run)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]  # noqa: E731
    return {"p50_ms": pick(0.5) * 1000.0, "p99_ms": pick(0.99) * 1000.0, "mean_ms": statistics.mean(ordered) * 1000.0}


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    import openai

    from vila_ros.bench.common import write_report
    from vila_ros.engine import GenerationConfig, create_engine
    from vila_ros.engine.openai_engine import encode_jpeg, message_content
    from vila_ros.resources import resolve_model_dir
    from vila_ros.serve.launch import running_server

    model_dir = resolve_model_dir(args.model)
    rng = np.random.default_rng(0)
    jpegs = [encode_jpeg(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(args.frames)]
    decoded = [cv2.imdecode(np.frombuffer(j.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy() for j in jpegs]
    question = "Describe the scene."
    cfg = GenerationConfig(max_new_tokens=args.new_tokens)
    content = message_content(question, jpegs)
    clients = [int(c) for c in args.clients.split(",")]

    engine = create_engine(model_dir)
    engine.generate(question, decoded, cfg)  # warm-up
    lat = []
    t0 = time.perf_counter()
    for _ in range(args.requests):
        t = time.perf_counter()
        engine.generate(question, decoded, cfg)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    report: dict[str, Any] = {"model": model_dir.name, "frames": args.frames, "new_tokens": args.new_tokens,
                              "requests": args.requests, "cpu_count": os.cpu_count(), "machine": platform.machine(),
                              "in_process": {"requests_per_s": args.requests / wall, **_percentiles(lat)},
                              "served": {}}
    del engine
    with running_server(model_dir, "--served-model-name", "bench", "--max-queue", "64") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)

        def ask(_i: int) -> float:
            t = time.perf_counter()
            client.chat.completions.create(model="bench", messages=[{"role": "user", "content": content}],
                                           max_tokens=args.new_tokens, temperature=0)
            return time.perf_counter() - t

        ask(0)  # warm-up
        for n in clients:
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                lat = list(pool.map(ask, range(args.requests)))
            wall = time.perf_counter() - t0
            report["served"][str(n)] = {"requests_per_s": args.requests / wall, **_percentiles(lat)}
    base_rps = report["in_process"]["requests_per_s"]
    headline = {f"served_{n}_clients_vs_in_process_rps": report["served"][str(n)]["requests_per_s"] / base_rps
                for n in clients}
    write_report(args.json, report, "vila-ros serve vs in-process", headline)
    return 0
