"""``vila-ros bench cameras``: what N cameras cost the node against one, in one run.

a) model time per period: the node's inference worker (`ros/worker.py`, real scheduling, real engine) over N
   simulator cameras fed at the clip rate through their frame buffers, with data time advancing frame by frame
   (no DDS, no waiting): model time per alert period (1 s of data; a description every other period), with every
   due camera's work batched (what the node does) and one job at a time (as before batching), for each N, and the
   ratio of N cameras' batched period to one camera's. Run first, on an idle node process, so the ratio is not
   disturbed by camera processes.
b) the node over DDS: for each N, `bench node`'s load part (the node process, N camera processes at ``--fps``,
   ``--width`` x ``--height`` rgb8) for ``--duration`` seconds: frames dropped, description latency p50/p99 and
   latency minus model time, node CPU share. ``--node-duration 0`` skips it.
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

from vila_ros.tasks import NANOSECONDS


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("cameras", help="1, 2, 4, 8 cameras: model time per period (batched vs one "
                                                    "job at a time), frames dropped, latency, CPU share")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--cameras", default="1,2,4,8", help="camera counts")
    p.add_argument("--model", default="", help="checkpoint directory (default: the embedded default model)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or int4 (a quantized checkpoint)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the node's num_threads default)")
    p.add_argument("--periods", type=int, default=6, help="alert periods (1 s of data each) timed per camera count")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--node-duration", type=float, default=30.0, help="seconds per camera count over DDS; 0: skip")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vila_ros.engine import create_engine
    from vila_ros.resources import resolve_model_dir

    torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.cameras.split(",")]
    model_dir = resolve_model_dir(args.model)
    engine = create_engine(model_dir, precision=args.precision)
    load_before = os.getloadavg()[0]
    periods: dict[str, Any] = {}
    for count in counts:
        periods[str(count)] = {mode: model_time_per_period(engine, count, args.periods, args.width, args.height,
                                                           batched=mode == "batched")
                               for mode in ("batched", "one_at_a_time")}
    one = periods[str(counts[0])]["batched"]["ms_per_period"]
    ratios = {f"batched_{n}_over_batched_{counts[0]}": round(periods[str(n)]["batched"]["ms_per_period"] / one, 3)
              for n in counts}
    ratios.update({f"one_at_a_time_{n}_over_batched_{counts[0]}":
                   round(periods[str(n)]["one_at_a_time"]["ms_per_period"] / one, 3) for n in counts})
    report: dict[str, Any] = {
        "config": {"cameras": counts, "model": str(model_dir), "precision": args.precision, "threads": args.threads,
                   "periods": args.periods, "width": args.width, "height": args.height, "fps": args.fps,
                   "node_duration_s": args.node_duration},
        "model_time_per_period": periods, "ratios": ratios,
        "target": {"batched_4_over_1_at_most": 1.5,
                   "met": ratios["batched_4_over_batched_1"] <= 1.5 if {1, 4} <= set(counts) else None},
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min_before": round(load_before, 2),
                    "processor": platform.processor() or platform.machine()},
    }
    del engine
    if args.node_duration > 0:
        report["node"] = {str(n): node_load(n, args, Path(args.json)) for n in counts}
    report["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"json": str(path), "ratios": ratios, "target": report["target"]}))
    return 0


def model_time_per_period(engine: Any, cameras: int, periods: int, width: int, height: int,
                          batched: bool) -> dict[str, Any]:
    """Wall time of the worker's periodic work per alert period, N cameras at 4 fps of data, after a warm-up."""
    from vila_ros.ros.frame_buffer import CameraBuffer, Frame
    from vila_ros.ros.worker import InferenceWorker, WorkerSettings
    from vila_ros.sim import make_scenario

    names = [f"cam{i}" for i in range(cameras)]
    buffers = {n: CameraBuffer(n, 0.25, 10.0, 64, 1 << 30) for n in names}
    scenes = {n: make_scenario(i, "road" if i % 2 == 0 else "warehouse") for i, n in enumerate(names)}
    settings = WorkerSettings(num_frames=engine.num_video_frames, min_frames=engine.num_video_frames)
    worker = InferenceWorker(engine, buffers, settings, lambda d: None, lambda a: None)
    if not batched:
        worker._batch_period = lambda due: None  # each job generates on its own
    warmup_frames = settings.min_frames + 4  # the first period also encodes the whole window
    spent: list[float] = []
    step_s = 0.25
    total_frames = warmup_frames + periods * 4
    timed = 0.0
    for index in range(total_frames):
        t = 100.0 + index * step_s
        for name in names:
            buffers[name].add(Frame(name, int(t * NANOSECONDS), name, scenes[name].render(t, width, height)))
        started = time.perf_counter()
        while worker._step():
            pass
        elapsed = time.perf_counter() - started
        if index == warmup_frames - 1:
            before = dict(vars(worker.stats))
        if index >= warmup_frames:
            timed += elapsed
            if (index - warmup_frames) % 4 == 3:
                spent.append(timed * 1000.0)
                timed = 0.0
    return {"ms_per_period": round(statistics.fmean(spent), 2), "ms_per_period_each": [round(s, 1) for s in spent],
            **{name: getattr(worker.stats, key) - before[key] for name, key in (
                ("descriptions", "descriptions"), ("alert_checks", "alert_checks"), ("batches", "periods"),
                ("batched_generations", "period_rows"))}}


def node_load(cameras: int, args: argparse.Namespace, json_path: Path) -> dict[str, Any]:
    """`bench node` with N rgb8 cameras for a short run; its figures that this bench reports."""
    from vila_ros.bench import node

    out = json_path.with_name(f"{json_path.stem}_node{cameras}.json")
    node_args = argparse.Namespace(
        json=str(out), markdown="", duration=args.node_duration,
        cameras=",".join(f"cam{i}:rgb8" for i in range(cameras)), width=args.width, height=args.height,
        fps=args.fps, model=args.model, num_threads=args.threads, ingest_frames=8, sample_period=5.0,
        warmup=5.0, rss_slope_limit=0.5, node_param=[], dds_profile=None)
    node.run(node_args)
    report = json.loads(out.read_text())
    load, overhead = report["load"], report["description_overhead"]
    return {"published": sum(c["published"] for c in load["cameras"].values()),
            "dropped": sum(c["dropped"] for c in load["cameras"].values()),
            "publisher_overruns": sum(c["publisher_overruns"] for c in load["cameras"].values()),
            "node_cpu_percent": load["node_cpu_percent"], "descriptions": load["descriptions_published"],
            "alert_checks": load["alert_checks"], "inference_failures": load["inference_failures"],
            "description_latency_ms": {k: overhead["latency_ms"].get(k) for k in ("p50", "p99")},
            "description_model_ms": {k: overhead["model_ms"].get(k) for k in ("p50", "p99")},
            "latency_minus_all_model_ms": {k: overhead["minus_all_model_ms"].get(k) for k in ("p50", "p99")},
            "load_average_1min_end": report["machine"]["load_average_1min_end"], "full_report": str(out)}
