"""``vila-ros bench node``: what the perception node costs and how it holds up, in one run.

a) ingest: CPU and wall ms of the node's own image callback (`PerceptionNode._on_image`, on a configured node in
   this process) per frame of ``--width`` x ``--height``, for rgb8, bgr8 and JPEG, split into frames it keeps (decode,
   shrink, buffer) and frames it skips (stamp only), as a fraction of the frame period; plus deserialization.
b) load: the node as its own process (`python -m vila_ros.ros.perception_node`, embedded default model, descriptions
   and alert checks on) and one camera process per ``--cameras`` entry publishing at ``--fps`` over DDS on this host;
   per camera: published / received / dropped, callback duration and publish-to-end-of-callback latency (p50/p99,
   from the node's own histograms on /diagnostics).
c) memory: the node process's RSS (psutil) and the size of every container it reports on /diagnostics, sampled
   every ``--sample-period`` s for ``--duration`` s: start / end / max and a least-squares slope per minute over the
   samples after ``--warmup``. Criterion, RSS: flat when the slope is at most ``--rss-slope-limit`` MiB/min.
   Criterion, containers: flat when the highest value of the second half of the post-warm-up samples exceeds that of
   the first half by at most max(2, 5 %); else bounded when it stays within the container's own bound (a deque's
   maxlen, a buffer's frame or byte cap); else growing.
d) description latency minus model time: from the receipt of the newest frame of the described window to the
   publication of the description, minus the model time that description's message reports (vision_ms + prefill_ms
   + decode_ms: encoding of frames not yet encoded, then the engine's prefill and decode), and minus all model time
   spent meanwhile (other alert checks and descriptions it queued behind): the latter is the node's own overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
NODE_NAME = "vila_ros_bench_node"
TARGET_MS = 5.0


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("node", help="node ingest cost, callback latency under two cameras, RSS and "
                                                 "queues over time, description latency minus model time")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--markdown", default="", help="markdown summary (default: the JSON path with .md)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds the cameras publish")
    p.add_argument("--cameras", default="front:rgb8,rear:jpeg", help="name:encoding,... (rgb8, bgr8, jpeg)")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--model", default="", help="checkpoint directory (default: the embedded default model)")
    p.add_argument("--num-threads", type=int, default=1, help="the node's torch threads (its num_threads parameter)")
    p.add_argument("--ingest-frames", type=int, default=600, help="frames per encoding for the ingest-cost part")
    p.add_argument("--sample-period", type=float, default=5.0, help="seconds between RSS / queue samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from slopes (at most a quarter)")
    p.add_argument("--rss-slope-limit", type=float, default=0.5, help="MiB/min below which RSS counts as flat")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a node parameter (repeatable), e.g. history_size:=100 to fill the bounded history early")
    p.add_argument("--dds-profile", default=None,
                   help="Fast DDS XML profile for the node and camera processes (default: "
                        "$FASTDDS_DEFAULT_PROFILES_FILE if set, else config/fastdds_local_large_frames.xml; "
                        "'' = Fast DDS's built-in transports, whose 512 KiB shared-memory segment loses large frames)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import psutil

    from vila_ros.bench.node_load import camera_topic, ingest_cost
    from vila_ros.tools.harness import Listener, start_node, stop_node, use_dds_profile

    json_path = Path(args.json)
    work = json_path.with_name(json_path.stem + "_work")
    work.mkdir(parents=True, exist_ok=True)
    cameras = [tuple(c.split(":")) for c in args.cameras.split(",")]
    _source_first_on_path()
    dds_profile = use_dds_profile(args.dds_profile)

    ingest = ingest_cost(args.width, args.height, args.ingest_frames, args.fps, args.model, args.num_threads)

    parameters = {"camera_names": "[" + ",".join(n for n, _ in cameras) + "]",
                  "camera_topics": "[" + ",".join(camera_topic(n, e) for n, e in cameras) + "]",
                  "num_threads": str(args.num_threads), "event_log_path": str(work / "alerts.jsonl")}
    if args.model:
        parameters["model_dir"] = args.model
    for item in args.node_param:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SystemExit(f"--node-param expects NAME:=VALUE, got {item!r}")
        parameters[name] = value
    node = start_node(work / "node.log", parameters, name=NODE_NAME)
    watcher = Listener(f"/{NODE_NAME}")
    publishers: list[subprocess.Popen] = []
    samples: list[dict[str, Any]] = []
    try:
        if not watcher.wait_for_node(timeout=180):
            raise RuntimeError(f"the node did not come up; see {work / 'node.log'}")
        node_process = psutil.Process(node.pid)
        for index, (name, encoding) in enumerate(cameras):
            publishers.append(subprocess.Popen(
                [sys.executable, "-m", "vila_ros.bench.node_load", "--name", name, "--encoding", encoding,
                 "--width", str(args.width), "--height", str(args.height), "--fps", str(args.fps),
                 "--duration", str(args.duration), "--seed", str(index), "--out", str(work / f"camera_{name}.json")],
                stdout=open(work / f"camera_{name}.log", "w"), stderr=subprocess.STDOUT))
        started = time.monotonic()
        cpu_start = node_process.cpu_times()
        deadline = started + args.duration + 120
        while any(p.poll() is None for p in publishers) and time.monotonic() < deadline:
            samples.append(_sample(node_process, watcher, time.monotonic() - started))
            _sleep_until(started + len(samples) * args.sample_period, publishers)
        wall_s = time.monotonic() - started
        cpu_end = node_process.cpu_times()
        samples.append(_sample(node_process, watcher, wall_s))
        time.sleep(2.5)  # the tail of the frames is processed and two more diagnostics go out
        final = watcher.latest_diagnostics()
        described, alerted = len(watcher.descriptions), len(watcher.alerts)
    finally:
        for publisher in publishers:
            if publisher.poll() is None:
                publisher.kill()
        watcher.close()
        node_code = stop_node(node)
    camera_reports = {name: json.loads((work / f"camera_{name}.json").read_text()) for name, _ in cameras}
    report = {
        "config": {"duration_s": args.duration, "cameras": [{"name": n, "encoding": e, "topic": camera_topic(n, e)}
                                                            for n, e in cameras],
                   "width": args.width, "height": args.height, "fps": args.fps, "model": args.model or "default",
                   "num_threads": args.num_threads, "sample_period_s": args.sample_period,
                   "warmup_s": _warmup(args), "rss_slope_limit_mib_per_min": args.rss_slope_limit,
                   "target_ms": TARGET_MS, "dds_profile": dds_profile, "node_parameters": args.node_param},
        "ingest": ingest,
        "load": _load_report(cameras, camera_reports, final, described, alerted, wall_s,
                             _cpu(cpu_end) - _cpu(cpu_start)),
        **_memory_report(samples, _warmup(args), args.rss_slope_limit),
        "description_overhead": _overhead_report(final.get("description latency", {})),
        "node_exit_code": node_code, "work_dir": str(work),
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min_end": round(os.getloadavg()[0], 2),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown = Path(args.markdown) if args.markdown else json_path.with_suffix(".md")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(markdown_summary(report))
    print(json.dumps({"json": str(json_path), "markdown": str(markdown), "rss_flat": report["memory"]["flat"],
                      "queues_flat": report["queues_flat"], "description_overhead": report["description_overhead"]}))
    return 0


# ------------------------------------------------------------------------------------------------- sampling
def _source_first_on_path() -> None:
    """Child processes run this same vila_ros (a source checkout, not an older installed copy)."""
    import vila_ros

    root = str(Path(vila_ros.__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))


def _sample(process: Any, watcher: Any, t_s: float) -> dict[str, Any]:
    queues = watcher.latest_diagnostics().get("queues", {})
    return {"t_s": round(t_s, 2), "rss_mib": round(process.memory_info().rss / MIB, 2),
            "queues": {k: _number(v) for k, v in queues.items() if k != "rss_bytes"}}


def _sleep_until(when: float, publishers: list[subprocess.Popen]) -> None:
    while time.monotonic() < when and any(p.poll() is None for p in publishers):
        time.sleep(min(0.2, max(0.0, when - time.monotonic())))


def _warmup(args: argparse.Namespace) -> float:
    return min(args.warmup, args.duration / 4)


def _cpu(times: Any) -> float:
    return times.user + times.system


def _number(text: str) -> float | int | str | None:
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _values(status: dict[str, str], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: _number(v) for k, v in status.items() if k.startswith(prefix)}


# -------------------------------------------------------------------------------------------------- reports
def _load_report(cameras: list[tuple[str, str]], published: dict[str, dict], final: dict[str, dict[str, str]],
                 described: int, alerted: int, wall_s: float, node_cpu_s: float) -> dict[str, Any]:
    per_camera = {}
    for name, encoding in cameras:
        status = final.get(f"camera {name}", {})
        sent, received = published[name]["published"], _number(status.get("received", "0")) or 0
        per_camera[name] = {
            "encoding": encoding, "published": sent, "received": received, "dropped": max(0, sent - received),
            "drop_rate": round(max(0, sent - received) / sent, 5) if sent else None,
            "kept": _number(status.get("kept", "0")), "decode_errors": _number(status.get("decode_errors", "0")),
            "publisher_overruns": published[name]["overruns"], "achieved_fps": published[name]["achieved_fps"],
            "bytes_per_frame": published[name]["bytes_per_frame"],
            "publish_call_ms": published[name]["publish_call_ms"],
            "publish_to_callback_end_ms": _values(status, "frame_age_ms."),
            "callback_ms": _values(status, "callback_ms."), "kept_callback_ms": _values(status, "kept_ms."),
            "skipped_callback_ms": _values(status, "skipped_ms."), "kept_cpu_ms": _values(status, "kept_cpu_ms."),
            "skipped_cpu_ms": _values(status, "skipped_cpu_ms."),
            "negative_frame_ages": _number(status.get("negative_frame_ages", "0")),
        }
    inference = final.get("inference", {})
    return {"wall_s": round(wall_s, 2), "cameras": per_camera,
            "node_cpu_percent": round(100.0 * node_cpu_s / wall_s, 1) if wall_s else None,
            "descriptions_published": _number(inference.get("descriptions", "0")),
            "descriptions_received": described, "alert_checks": _number(inference.get("alert_checks", "0")),
            "alert_messages_received": alerted, "inference_failures": _number(inference.get("failures", "0")),
            "model_busy_s": _number(inference.get("busy_seconds", "0"))}


def fit_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return None if spread == 0 else 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def _series_summary(points: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    values = [v for _, v in points]
    after = [(t, v) for t, v in points if t >= warmup_s]
    slope = fit_slope(after)
    return {"start": values[0], "end": values[-1], "max": max(values), "after_warmup_start": after[0][1] if after
            else None, "slope_per_min": None if slope is None else round(slope, 4), "samples_after_warmup": len(after)}


def _memory_report(samples: list[dict[str, Any]], warmup_s: float, slope_limit: float) -> dict[str, Any]:
    rss = _series_summary([(s["t_s"], s["rss_mib"]) for s in samples], warmup_s)
    rss["flat"] = rss["slope_per_min"] is not None and rss["slope_per_min"] <= slope_limit
    rss["criterion"] = f"least-squares slope after {warmup_s:g} s warm-up <= {slope_limit:g} MiB/min"
    names = sorted({k for s in samples for k in s["queues"] if not k.endswith(".bound")})
    queues = {}
    for name in names:
        points = [(s["t_s"], s["queues"][name]) for s in samples if isinstance(s["queues"].get(name), (int, float))]
        if not points:
            continue
        summary = _series_summary(points, warmup_s)
        bound = next((s["queues"][name + ".bound"] for s in reversed(samples) if name + ".bound" in s["queues"]), None)
        summary["bound"] = bound
        summary["verdict"] = _verdict([v for t, v in points if t >= warmup_s], bound)
        queues[name] = summary
    return {"memory": {"rss_mib": rss, "flat": rss["flat"], "samples": [{"t_s": s["t_s"], "rss_mib": s["rss_mib"]}
                                                                       for s in samples]},
            "queues": queues, "queues_flat": bool(queues) and all(q["verdict"] in ("flat", "bounded")
                                                                  for q in queues.values()),
            "queues_not_flat": [n for n, q in queues.items() if q["verdict"] not in ("flat", "bounded")]}


def _verdict(values: list[float], bound: float | None) -> str:
    if len(values) < 2:
        return "too few samples"
    half = len(values) // 2
    first, second = max(values[:half]), max(values[half:])
    if second - first <= max(2.0, 0.05 * abs(first)):
        return "flat"
    if bound is not None and max(values) <= bound:
        return "bounded"
    return "growing"


def _overhead_report(status: dict[str, str]) -> dict[str, Any]:
    def stats(name: str) -> dict[str, Any]:
        return _values(status, f"{name}.")

    minus_own, minus_all = stats("minus_model_ms"), stats("minus_all_model_ms")
    return {"descriptions_timed": _number(status.get("latency_ms.count", "0")),
            "unmatched": _number(status.get("unmatched", "0")),
            "latency_ms": stats("latency_ms"), "model_ms": stats("model_ms"),
            "minus_model_ms": minus_own, "minus_all_model_ms": minus_all,
            "newest_frame_ingest_ms": stats("newest_frame_ingest_ms"), "target_ms": TARGET_MS,
            "meets_target": {"minus_model_p99": _at_most(minus_own.get("p99"), TARGET_MS),
                             "minus_all_model_p99": _at_most(minus_all.get("p99"), TARGET_MS),
                             "minus_all_model_p50": _at_most(minus_all.get("p50"), TARGET_MS)}}


def _at_most(value: Any, limit: float) -> bool | None:
    return None if value is None else value <= limit


def markdown_summary(report: dict[str, Any]) -> str:
    c, ingest, load = report["config"], report["ingest"], report["load"]
    lines = [f"# vila-ros bench node: {c['width']}x{c['height']} at {c['fps']:g} fps, {c['duration_s']:g} s", "",
             f"Machine: {report['machine']['cpu_count']} CPUs, load average at the end "
             f"{report['machine']['load_average_1min_end']} (other work on the machine shares the cores). "
             f"Model: {c['model']}, torch threads {c['num_threads']}.", "",
             f"## a) ingest cost per frame (node callback, in process; frame period {ingest['frame_period_ms']} ms)",
             "", "| encoding | kept wall p50 / p99 ms | kept CPU p50 ms | kept % of period | skipped wall p50 / p99 ms "
             "| skipped % of period | deserialize p50 ms (raw: unpaid) | incl. raw take, % of period |",
             "|---|---|---|---|---|---|---|---|"]
    for encoding in ("rgb8", "bgr8", "jpeg"):
        row = ingest[encoding]
        k, s = row["kept"], row["skipped"]
        lines.append(f"| {encoding} | {_f(k['wall_ms']['p50'])} / {_f(k['wall_ms']['p99'])} | {_f(k['cpu_ms']['p50'])} "
                     f"| {_pct(k['wall_fraction_of_period'])} | {_f(s['wall_ms']['p50'])} / {_f(s['wall_ms']['p99'])} "
                     f"| {_pct(s['wall_fraction_of_period'])} | {_f(row['deserialize_ms']['p50'])} "
                     f"| {_pct(row['core_share_at_fps'])} |")
    lines += ["", f"## b) two cameras over DDS ({load['wall_s']} s; node CPU {load['node_cpu_percent']} %)", "",
              "| camera | published / received / dropped | publish to end of callback p50 / p99 / max ms "
              "| callback p50 / p99 ms | kept callback p50 / p99 ms | skipped callback p50 / p99 ms |",
              "|---|---|---|---|---|---|"]
    for name, cam in load["cameras"].items():
        age, cb, kept, skipped = (cam["publish_to_callback_end_ms"], cam["callback_ms"], cam["kept_callback_ms"],
                                  cam["skipped_callback_ms"])
        lines.append(f"| {name} ({cam['encoding']}) | {cam['published']} / {cam['received']} / {cam['dropped']} "
                     f"| {_f(age.get('p50'))} / {_f(age.get('p99'))} / {_f(age.get('max'))} "
                     f"| {_f(cb.get('p50'))} / {_f(cb.get('p99'))} | {_f(kept.get('p50'))} / {_f(kept.get('p99'))} "
                     f"| {_f(skipped.get('p50'))} / {_f(skipped.get('p99'))} |")
    lines += ["", f"Descriptions {load['descriptions_published']} (received {load['descriptions_received']}), alert "
              f"checks {load['alert_checks']}, inference failures {load['inference_failures']}.", ""]
    rss = report["memory"]["rss_mib"]
    queues_verdict = ("all flat or bounded" if report["queues_flat"]
                      else "NOT flat: " + ", ".join(report["queues_not_flat"]))
    lines += ["## c) memory and queues", "",
              f"RSS MiB: start {rss['start']}, end {rss['end']}, max {rss['max']}, "
              f"slope {rss['slope_per_min']} MiB/min "
              f"-> **{'flat' if rss['flat'] else 'NOT flat'}** ({rss['criterion']}).", "",
              f"Containers: **{queues_verdict}**.",
              "", "| container | start | end | max | bound | slope /min | verdict |", "|---|---|---|---|---|---|---|"]
    for name, q in report["queues"].items():
        lines.append(f"| {name} | {q['start']} | {q['end']} | {q['max']} | {_f(q['bound'])} | {_f(q['slope_per_min'])} "
                     f"| {q['verdict']} |")
    d = report["description_overhead"]
    lines += ["", f"## d) description latency minus model time (target <= {d['target_ms']:g} ms)", "",
              f"{d['descriptions_timed']} descriptions timed ({d['unmatched']} unmatched).", "",
              "| figure | p50 ms | p99 ms | max ms |", "|---|---|---|---|"]
    for key, label in (("latency_ms", "receipt of newest frame -> published"), ("model_ms", "its own model time"),
                       ("minus_model_ms", "latency minus its own model time"),
                       ("minus_all_model_ms", "latency minus all model time meanwhile (node overhead)"),
                       ("newest_frame_ingest_ms", "of which: ingest of the newest frame")):
        v = d[key]
        lines.append(f"| {label} | {_f(v.get('p50'))} | {_f(v.get('p99'))} | {_f(v.get('max'))} |")
    lines += ["", f"Meets target: {json.dumps(d['meets_target'])}.", ""]
    return "\n".join(lines)


def _f(value: Any) -> str:
    return "-" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f} %"
