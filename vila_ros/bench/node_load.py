"""Load for `vila-ros bench node`: synthetic cameras, a watcher of the node's outputs, and the ingest-cost probe.

- `python -m vila_ros.bench.node_load --name front --encoding rgb8 ...`: one camera in a process of its own (as a
  camera driver is), publishing simulator frames at a fixed rate with sensor-data QoS. Each frame is stamped with
  the ROS clock right before `publish()`, so the node's frame age at the end of its callback is the latency from
  publish to processed. Frames are rendered once and cycled; at exit the camera writes its counts as JSON.
- `ingest_cost`: a configured (not activated) PerceptionNode in this process, its image callback called directly
  with the serialized message, as its raw subscriptions get it from the executor; what deserializing it would cost
  (the executor's work for a subscription that is not raw) is measured beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from vila_ros.ros.conversion import rgb_to_compressed, rgb_to_image
from vila_ros.ros.node_stats import Histogram
from vila_ros.tasks import NANOSECONDS

ENCODINGS = ("rgb8", "bgr8", "jpeg")
CAMERA_QOS = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.BEST_EFFORT,
                        durability=QoSDurabilityPolicy.VOLATILE, history=QoSHistoryPolicy.KEEP_LAST)


def camera_topic(name: str, encoding: str) -> str:
    return f"/bench/{name}/image_raw" + ("/compressed" if encoding == "jpeg" else "")


def camera_messages(encoding: str, width: int, height: int, count: int, seed: int = 0) -> list[Any]:
    """`count` simulator frames (road for even seeds, warehouse for odd) as Image or CompressedImage (JPEG q90)."""
    from vila_ros.sim import make_scenario

    scenario = make_scenario(seed, "road" if seed % 2 == 0 else "warehouse")
    messages = []
    for index in range(count):
        rgb = scenario.render(index * 0.5, width, height)
        messages.append(rgb_to_compressed(rgb, 0, "bench") if encoding == "jpeg"
                        else rgb_to_image(rgb, 0, "bench", encoding))
    return messages


# --------------------------------------------------------------------------------------------- camera process
def run_camera(name: str, encoding: str, width: int, height: int, fps: float, duration_s: float, out: Path,
               frames: int = 8, seed: int = 0, match_timeout_s: float = 60.0) -> dict[str, Any]:
    messages = camera_messages(encoding, width, height, frames, seed)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"vila_ros_bench_camera_{name}", context=context)
    publisher = node.create_publisher(CompressedImage if encoding == "jpeg" else Image,
                                      camera_topic(name, encoding), CAMERA_QOS)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    deadline = time.monotonic() + match_timeout_s
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    matched = publisher.get_subscription_count() > 0
    publish_ms = Histogram()
    published = overruns = 0
    cpu0 = time.process_time()
    period = 1.0 / fps
    started = time.perf_counter()
    index = 0
    while matched and not stop.is_set():
        due = started + index * period
        if due - started >= duration_s:
            break
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > period:  # fell a whole frame behind: skip ahead, as a camera overruns
            missed = math.ceil((now - started) / period) - index
            overruns += missed
            index += missed
            continue
        msg = messages[index % len(messages)]
        msg.header.stamp = node.get_clock().now().to_msg()
        t0 = time.perf_counter()
        publisher.publish(msg)
        publish_ms.add((time.perf_counter() - t0) * 1000.0)
        published += 1
        index += 1
    elapsed = time.perf_counter() - started
    report = {"name": name, "encoding": encoding, "topic": camera_topic(name, encoding), "matched": matched,
              "width": width, "height": height, "fps": fps, "published": published, "overruns": overruns,
              "achieved_fps": round(published / elapsed, 3) if elapsed > 0 else 0.0,
              "bytes_per_frame": round(statistics.fmean(len(m.data) for m in messages)),
              "publish_call_ms": publish_ms.summary(), "cpu_s": round(time.process_time() - cpu0, 3),
              "elapsed_s": round(elapsed, 3)}
    out.write_text(json.dumps(report, indent=2) + "\n")
    node.destroy_node()
    context.try_shutdown()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one synthetic camera for `vila-ros bench node`")
    parser.add_argument("--name", required=True)
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--duration", type=float, required=True,
                        help="seconds of publishing after a subscriber matched")
    parser.add_argument("--frames", type=int, default=8, help="distinct frames, cycled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file of counts written at exit")
    args = parser.parse_args(argv)
    report = run_camera(args.name, args.encoding, args.width, args.height, args.fps, args.duration, Path(args.out),
                        args.frames, args.seed)
    return 0 if report["matched"] else 1


# ----------------------------------------------------------------------------------------------- ingest cost
def ingest_cost(width: int, height: int, frames: int, fps: float = 30.0, model_dir: str = "",
                num_threads: int = 1, distinct: int = 8) -> dict[str, Any]:
    """CPU and wall ms of the node's image callback per frame, kept and skipped, per encoding, on a 30 fps stream.

    Also the cost of turning the DDS payload into a Python message (`deserialize_ms`), which the executor pays for
    every frame before the callback runs.
    """
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.serialization import deserialize_message, serialize_message

    from vila_ros.ros.conversion import ns_to_stamp
    from vila_ros.ros.perception_node import PerceptionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    name = "vila_ros_ingest_probe"
    overrides = [Parameter("camera_names", value=list(ENCODINGS)),
                 Parameter("camera_topics", value=[f"/{name}/{e}/image_raw" + ("/compressed" if e == "jpeg" else "")
                                                   for e in ENCODINGS]),
                 Parameter("model_dir", value=model_dir), Parameter("num_threads", value=num_threads),
                 Parameter("event_log_path", value=""), Parameter("stale_after_s", value=0.0),
                 Parameter("autostart", value=False)]
    node = PerceptionNode(name, context=context, parameter_overrides=overrides)
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("the probe node could not be configured")
        payloads = {e: [serialize_message(m) for m in camera_messages(e, width, height, distinct)] for e in ENCODINGS}
        types = {e: CompressedImage if e == "jpeg" else Image for e in ENCODINGS}
        samples: dict[str, dict[str, list[float]]] = {
            e: {k: [] for k in ("kept_wall", "kept_cpu", "skipped_wall", "skipped_cpu", "deserialize", "take")}
            for e in ENCODINGS}
        period_ns = round(NANOSECONDS / fps)
        base_ns = 1_000 * NANOSECONDS
        for index in range(frames):
            for encoding in ENCODINGS:  # interleaved, so background load touches every encoding alike
                t0 = time.perf_counter()
                msg = deserialize_message(payloads[encoding][index % distinct], types[encoding])
                samples[encoding]["deserialize"].append((time.perf_counter() - t0) * 1000.0)
                msg.header.stamp = ns_to_stamp(base_ns + index * period_ns)
                payload = serialize_message(msg)
                t0 = time.perf_counter()
                payload = bytes(memoryview(payload))  # what a raw take costs: one copy into a bytes object
                samples[encoding]["take"].append((time.perf_counter() - t0) * 1000.0)
                kept_before = node.buffers[encoding].stats.kept
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                node._on_image(encoding, payload)
                wall, cpu = (time.perf_counter() - wall0) * 1000.0, (time.thread_time() - cpu0) * 1000.0
                outcome = "kept" if node.buffers[encoding].stats.kept > kept_before else "skipped"
                samples[encoding][f"{outcome}_wall"].append(wall)
                samples[encoding][f"{outcome}_cpu"].append(cpu)
        errors = {e: node.buffers[e].stats.decode_errors for e in ENCODINGS}
        clip_fps = next(iter(node.cameras.values())).clip_fps
        frame_max_side = node.get_parameter("frame_max_side").value
    finally:
        node.destroy_node()
        context.try_shutdown()
    period_ms = 1000.0 / fps
    report: dict[str, Any] = {"width": width, "height": height, "fps": fps, "frame_period_ms": round(period_ms, 3),
                              "frames_per_encoding": frames, "clip_fps": clip_fps, "frame_max_side": frame_max_side}
    for encoding, s in samples.items():
        kept, skipped = len(s["kept_wall"]), len(s["skipped_wall"])
        row: dict[str, Any] = {"decode_errors": errors[encoding],
                               "payload_bytes": round(statistics.fmean(len(p) for p in payloads[encoding]))}
        for outcome, count in (("kept", kept), ("skipped", skipped)):
            wall, cpu = _stats(s[f"{outcome}_wall"]), _stats(s[f"{outcome}_cpu"])
            row[outcome] = {"count": count, "wall_ms": wall, "cpu_ms": cpu,
                            "wall_fraction_of_period": _fraction(wall["p50"], period_ms),
                            "cpu_fraction_of_period": _fraction(cpu["p50"], period_ms)}
        row["deserialize_ms"] = _stats(s["deserialize"])  # not paid: the subscriptions are raw
        row["raw_take_ms"] = _stats(s["take"])
        # What one camera costs the node per frame on average, at its real keep/skip mix.
        mean_cpu = (sum(s["kept_cpu"]) + sum(s["skipped_cpu"])) / max(1, kept + skipped)
        row["mean_callback_cpu_ms"] = round(mean_cpu, 4)
        row["mean_with_take_ms"] = round(mean_cpu + statistics.fmean(s["take"]), 4)
        row["core_share_at_fps"] = _fraction(row["mean_with_take_ms"], period_ms)
        report[encoding] = row
    return report


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)], 4)
    return {"p50": pick(50), "p90": pick(90), "p99": pick(99), "max": round(ordered[-1], 4),
            "mean": round(statistics.fmean(values), 4)}


def _fraction(ms: float | None, period_ms: float) -> float | None:
    return None if ms is None else round(ms / period_ms, 5)


if __name__ == "__main__":
    sys.exit(main())
