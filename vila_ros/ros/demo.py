"""`make demo` / `vila-ros demo`: the product end to end on the embedded default model.

Records a simulated drive (with corner cases and a ground-truth sidecar) as a rosbag2, starts the perception node
as its own process, replays the bag into it over DDS, prints the descriptions and alerts as they arrive, asks it
a question, and scores the alerts against the ground truth. Everything is written under --out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

S = 1_000_000_000


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="output directory (bag, node log, summary.json)")
    parser.add_argument("--model", default="", help="VILA1.5 checkpoint directory; default: the embedded model")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of simulated driving")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--family", default=None, choices=["road", "warehouse"], help="scene family (default: mixed)")
    parser.add_argument("--fps", type=float, default=10.0, help="camera rate of the recording")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")


def run(args) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import shutil

    from vila_ros.resources import resolve_model_dir
    from vila_ros.sim.writers import truth_path, write_bag

    model_dir = resolve_model_dir(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "drive"
    if bag.exists():
        shutil.rmtree(bag)
        truth_path(bag).unlink(missing_ok=True)
    print(f"[demo] recording {args.duration:.0f} s of simulated camera into {bag} ...", flush=True)
    write_bag(bag, cameras=["front"], fps=args.fps, size=(640, 480), encoding="jpeg", duration=args.duration,
              seed=args.seed, family=args.family, storage="mcap")
    truth = json.loads(truth_path(bag).read_text())

    log_path = out / "node.log"
    node_process = subprocess.Popen(
        [sys.executable, "-m", "vila_ros.ros.perception_node", "--ros-args", "-p", f"model_dir:={model_dir}",
         "-p", "camera_names:=[front]", "-p", "camera_topics:=[/cameras/front/image_raw/compressed]"],
        stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        summary = _drive(bag, truth, log_path, args.rate)
    finally:
        node_process.send_signal(2)
        try:
            node_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_process.kill()
    summary["model_dir"] = str(model_dir)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] alerts: {summary['alerts']['matched']}/{summary['alerts']['events']} corner cases found, "
          f"{summary['alerts']['false_alerts']} false alerts; summary in {out / 'summary.json'}", flush=True)
    return 0


def _drive(bag: Path, truth: dict, log_path: Path, rate: float) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    from vila_ros.msg import CornerCaseAlert, SceneDescription
    from vila_ros.ros.client import call_service
    from vila_ros.ros.conversion import stamp_to_ns
    from vila_ros.ros.replay import replay_bag
    from vila_ros.srv import QueryScene

    start_ns = truth["start_ns"]
    rclpy.init()
    node = rclpy.create_node("vila_ros_demo")
    descriptions, alerts = [], []

    def on_description(msg: SceneDescription) -> None:
        descriptions.append(msg)
        t = (stamp_to_ns(msg.header.stamp) - start_ns) / S
        print(f"  t={t:5.1f}s  [{msg.cameras[0]}] {msg.text}   ({msg.decode_ms:.0f} ms decode)", flush=True)

    def on_alert(msg: CornerCaseAlert) -> None:
        alerts.append(msg)
        t = (stamp_to_ns(msg.header.stamp) - start_ns) / S
        state = ("BEGIN", "ONGOING", "END")[msg.state]
        print(f"  t={t:5.1f}s  ALERT {state:7s} {msg.category} ({msg.alert_id})", flush=True)

    qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
    node.create_subscription(SceneDescription, "/vila_perception/descriptions", on_description, qos)
    node.create_subscription(CornerCaseAlert, "/vila_perception/alerts", on_alert, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        print("[demo] waiting for the perception node ...", flush=True)
        client = node.create_client(QueryScene, "/vila_perception/query_scene")
        if not client.wait_for_service(timeout_sec=120):
            raise RuntimeError(f"the perception node did not come up; see {log_path}")
        print(f"[demo] replaying {bag.name} at {rate}x", flush=True)
        replay_node = rclpy.create_node("vila_ros_demo_replay")
        replay_bag(replay_node, bag, rate=rate)
        time.sleep(3.0)  # let the last checks finish
        stop.set()
        spinner.join()
        answer = call_service(node, QueryScene, "/vila_perception/query_scene",
                              QueryScene.Request(question="Describe the scene."), 60)
        print(f"[demo] QueryScene 'Describe the scene.' -> {answer.answer!r} ({answer.latency_ms:.0f} ms)", flush=True)
        replay_node.destroy_node()
    finally:
        stop.set()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return {"descriptions": len(descriptions), "query_answer": answer.answer,
            "alerts": score_alerts(truth, alerts)}


def score_alerts(truth: dict, alerts: list) -> dict:
    """Match BEGIN alerts to the sidecar's events of the same camera and category."""
    from vila_ros.ros.conversion import stamp_to_ns

    begins = [a for a in alerts if a.state == 0]
    events = [(camera, event) for camera, spec in truth["cameras"].items() for event in spec["events"]]
    matched, delays, used = 0, [], set()
    for camera, event in events:
        end_ns = event["end_ns"] or event["start_ns"] + 10 * S
        for index, alert in enumerate(begins):
            stamp = stamp_to_ns(alert.header.stamp)
            if index in used or alert.camera != camera or alert.category != event["category"]:
                continue
            if event["start_ns"] - S // 2 <= stamp <= end_ns + 2 * S:
                used.add(index)
                matched += 1
                delays.append((stamp - event["start_ns"]) / S)
                break
    return {"events": len(events), "matched": matched, "false_alerts": len(begins) - len(used),
            "mean_seconds_to_alert": sum(delays) / len(delays) if delays else None,
            "by_event": [{"camera": c, "category": e["category"], "start_s": e["start_s"]} for c, e in events]}
