"""Replay bags with ground truth into a perception node process and score what it says (`vila-ros replay-test`).

The node runs as its own process, exactly as deployed; this process replays the bags over DDS, listens like any
other subscriber, and compares the alerts with the planted events of the bags' `.truth.json` sidecars: recall,
false alerts, frames-to-alert, and latency (wall time from publishing a frame to receiving the description whose
newest frame it is).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

from vila_ros.msg import CornerCaseAlert, SceneDescription  # noqa: E402
from vila_ros.ros.conversion import stamp_to_ns  # noqa: E402
from vila_ros.ros.outputs import STATE_NAMES  # noqa: E402

S = 1_000_000_000
NODE_NAME = "vila_perception"


@dataclass
class Received:
    message: object
    wall: float


@dataclass
class Listener:
    """Subscribes to a perception node's outputs and to /diagnostics in the background (its own context and
    executor thread)."""

    node_name: str = f"/{NODE_NAME}"
    descriptions: list[Received] = field(default_factory=list)
    alerts: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vila_ros_listener", context=self.context)
        reliable = QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(SceneDescription, f"{self.node_name}/description",
                                      lambda m: self._on(self.descriptions, m), reliable)
        self.node.create_subscription(CornerCaseAlert, f"{self.node_name}/alerts",
                                      lambda m: self._on(self.alerts, m), latched)
        self._diagnostics: dict[str, dict[str, str]] = {}
        self._diagnostics_lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.callbacks = []
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on(self, into: list, message) -> None:
        into.append(Received(message, time.monotonic()))
        for callback in self.callbacks:
            callback(message)

    def _on_diagnostics(self, array) -> None:
        from vila_ros.ros.diagnostics import local_status_name

        with self._diagnostics_lock:
            for status in array.status:
                name = local_status_name(status.name, self.node_name)
                if name is not None:  # statuses of other nodes on /diagnostics are not ours
                    self._diagnostics[name] = {kv.key: kv.value for kv in status.values}

    def latest_diagnostics(self) -> dict[str, dict[str, str]]:
        """The latest key -> value of each of the node's /diagnostics statuses, by local name ("camera front",
        "inference", ...; a copy)."""
        with self._diagnostics_lock:
            return {name: dict(values) for name, values in self._diagnostics.items()}

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_node(self, timeout: float) -> bool:
        """Whether the node reaches the lifecycle state *active* within `timeout` s. (Its services exist from
        start-up, answering "not configured", so their presence says nothing about the model being loaded.)"""
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + timeout
        client = self.node.create_client(GetState, f"{self.node_name}/get_state")
        try:
            while time.monotonic() < deadline:
                if not client.wait_for_service(timeout_sec=max(0.0, min(1.0, deadline - time.monotonic()))):
                    continue
                future = client.call_async(GetState.Request())  # answered through the background executor
                while not future.done() and time.monotonic() < deadline:
                    time.sleep(0.02)
                if future.done() and future.result().current_state.label == "active":
                    return True
                client.remove_pending_request(future)
                time.sleep(0.1)
            return False
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def start_node(log_path: Path, parameters: dict[str, str], name: str = NODE_NAME) -> subprocess.Popen:
    arguments = [sys.executable, "-m", "vila_ros.ros.perception_node", "--ros-args", "-r", f"__node:={name}"]
    for key, value in parameters.items():
        arguments += ["-p", f"{key}:={value}"]
    return subprocess.Popen(arguments, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen, timeout: float = 20.0) -> int:
    process.send_signal(2)  # SIGINT: the node's clean shutdown path
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


def load_truth(bag: Path, truth_file: Path | None = None) -> dict:
    from vila_ros.sim.writers import truth_path

    path = truth_file or truth_path(bag)
    if not path.is_file():
        raise FileNotFoundError(f"no ground truth beside {bag}: expected {path}")
    return json.loads(path.read_text())


def run_replay_test(bags: list[Path], out_dir: Path, model_dir: str = "", rate: float = 1.0,
                    node_parameters: dict[str, str] | None = None, printer=None, settle_s: float = 3.0,
                    questions: tuple[str, ...] = (), truth_files: list[Path] | None = None,
                    clock: bool = False) -> dict:
    """Run a node on the bags (replayed concurrently, one or more cameras each) and return the scored report.

    `questions` are asked through QueryScene after the replay; their answers go into the report. With `clock`, the
    replay publishes /clock and the node runs on it (use_sim_time).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_files = truth_files or [None] * len(bags)
    truths = [load_truth(bag, truth_file) for bag, truth_file in zip(bags, truth_files)]
    cameras = {name: spec for truth in truths for name, spec in truth["cameras"].items()}
    parameters = {"camera_names": "[" + ",".join(cameras) + "]",
                  "camera_topics": "[" + ",".join(spec["topic"] for spec in cameras.values()) + "]",
                  "event_log_path": str(out_dir / "alerts.jsonl"), "stale_after_s": "0.0"}
    if model_dir:
        parameters["model_dir"] = str(model_dir)
    if clock:
        parameters["use_sim_time"] = "true"
    parameters.update(node_parameters or {})
    log_path = out_dir / "node.log"
    process = start_node(log_path, parameters)
    listener = Listener()
    if printer is not None:
        listener.callbacks.append(printer)
    published: dict[int, float] = {}
    try:
        if not listener.wait_for_node(timeout=120):
            raise RuntimeError(f"the perception node did not come up; see {log_path}:\n"
                               + log_path.read_text()[-2000:])
        _replay_all(bags, rate, published, clock)
        time.sleep(settle_s)  # the last checks run on the newest frames
        answers = [_ask(question) for question in questions]
    finally:
        listener.close()
        code = stop_node(process)
    report = score(truths, listener.descriptions, listener.alerts, published)
    report["answers"] = answers
    report.update({"bags": [str(b) for b in bags], "rate": rate, "node_exit_code": code, "node_log": str(log_path),
                   "parameters": parameters})
    (out_dir / "replay_test.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(timeline_markdown(truths, listener.descriptions, listener.alerts, report))
    return report


def _ask(question: str) -> dict:
    from vila_ros.ros.client import call_service, isolated_node
    from vila_ros.srv import QueryScene

    with isolated_node("vila_ros_replay_test_query") as node:
        response = call_service(node, QueryScene, f"/{NODE_NAME}/query_scene", QueryScene.Request(question=question),
                                timeout_sec=120)
    return {"question": question, "success": response.success, "answer": response.answer,
            "error_message": response.error_message, "latency_ms": round(response.latency_ms, 1),
            "frames": len(response.frame_stamps)}


def _replay_all(bags: list[Path], rate: float, published: dict[int, float], clock: bool = False) -> None:
    from vila_ros.ros.client import isolated_node
    from vila_ros.ros.replay import replay_bag

    errors = []

    def replay(node, bag):
        try:
            replay_bag(node, bag, rate=rate, clock=clock,
                       on_publish=lambda topic, ns: published.setdefault(ns, time.monotonic()))
        except Exception as error:  # noqa: BLE001 - reported after the other replays finish
            errors.append(error)

    with isolated_node("vila_ros_replay_test") as node:
        threads = [threading.Thread(target=replay, args=(node, bag)) for bag in bags]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def score(truths: list[dict], descriptions: list[Received], alerts: list[Received],
          published: dict[int, float], clip_fps: float = 4.0) -> dict:
    events = [(camera, event) for truth in truths for camera, spec in truth["cameras"].items()
              for event in spec["events"]]
    begins = [r.message for r in alerts if r.message.state == CornerCaseAlert.BEGIN
              and r.message.category != "sensor_stale"]
    last_update_ns: dict[str, int] = {}
    for r in alerts:
        last_update_ns[r.message.alert_id] = max(last_update_ns.get(r.message.alert_id, 0),
                                                 stamp_to_ns(r.message.header.stamp))
    used: set[int] = set()
    per_event = []
    for camera, event in events:
        end_ns = event["end_ns"] if event["end_ns"] is not None else event["start_ns"] + 10 * S
        match = None
        for index, alert in enumerate(begins):
            stamp = stamp_to_ns(alert.header.stamp)
            if (index not in used and alert.camera == camera and alert.category == event["category"]
                    and event["start_ns"] - S // 2 <= stamp <= end_ns + 2 * S):
                match = index
                break
        if match is None:  # an alert of the category raised earlier and still active when the event began
            match = next((index for index, alert in enumerate(begins) if index not in used
                          and alert.camera == camera and alert.category == event["category"]
                          and stamp_to_ns(alert.header.stamp) < event["start_ns"]
                          and last_update_ns.get(alert.alert_id, 0) >= event["start_ns"]), None)
        seconds = None
        if match is not None:
            used.add(match)
            seconds = max(0.0, (stamp_to_ns(begins[match].header.stamp) - event["start_ns"]) / S)
        per_event.append({"camera": camera, "category": event["category"], "start_ns": event["start_ns"],
                          "alerted": match is not None, "seconds_to_alert": seconds,
                          "frames_to_alert": None if seconds is None else round(seconds * clip_fps, 2)})
    false_alerts = [{"camera": a.camera, "category": a.category, "stamp_ns": stamp_to_ns(a.header.stamp)}
                    for index, a in enumerate(begins) if index not in used]
    latencies = [(r.wall - published[stamp_to_ns(r.message.header.stamp)]) * 1000.0 for r in descriptions
                 if stamp_to_ns(r.message.header.stamp) in published]
    model_ms = [r.message.vision_ms + r.message.prefill_ms + r.message.decode_ms for r in descriptions]
    found = [e for e in per_event if e["alerted"]]
    frames = [e["frames_to_alert"] for e in found]
    return {
        "events": len(events), "alerted": len(found), "recall": len(found) / len(events) if events else None,
        "false_alerts": len(false_alerts), "alert_begins": len(begins),
        "precision": len(found) / len(begins) if begins else None,
        "frames_to_alert_median": statistics.median(frames) if frames else None,
        "frames_to_alert_mean": statistics.fmean(frames) if frames else None,
        "descriptions": len(descriptions),
        "description_latency_ms_median": statistics.median(latencies) if latencies else None,
        "description_latency_ms_p95": _percentile(latencies, 95),
        "model_ms_median": statistics.median(model_ms) if model_ms else None,
        "per_event": per_event, "false_alert_list": false_alerts,
    }


def _percentile(values: list[float], q: float):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timeline_markdown(truths: list[dict], descriptions: list[Received], alerts: list[Received], report: dict) -> str:
    start_ns = min(truth["start_ns"] for truth in truths)
    rows = []
    for truth in truths:
        for camera, spec in truth["cameras"].items():
            for segment in spec["segments"]:
                caption = (segment.get("truth") or {}).get("caption", "")
                rows.append((segment["start_ns"], camera, "scene (truth)", caption))
            for event in spec["events"]:
                rows.append((event["start_ns"], camera, "EVENT (truth)", event["category"]))
    for r in descriptions:
        m = r.message
        rows.append((stamp_to_ns(m.header.stamp), ",".join(m.cameras), f"description ({len(m.frame_stamps)} frames)",
                     m.text))
    for r in alerts:
        m = r.message
        state = STATE_NAMES[m.state]
        rows.append((stamp_to_ns(m.header.stamp), m.camera, f"alert {state}", f"{m.category} ({m.alert_id})"))
    rows.sort(key=lambda row: row[0])
    lines = ["# Replay test report", "",
             f"Events: {report['events']}, alerted: {report['alerted']} (recall {_fmt(report['recall'])}), "
             f"false alerts: {report['false_alerts']}, frames to alert (median): "
             f"{_fmt(report['frames_to_alert_median'])}, description latency median / p95: "
             f"{_fmt(report['description_latency_ms_median'])} / {_fmt(report['description_latency_ms_p95'])} ms "
             f"(model time median {_fmt(report['model_ms_median'])} ms).", "",
             "| t (s) | camera | what | text |", "|---:|---|---|---|"]
    for stamp, camera, what, text in rows:
        lines.append(f"| {(stamp - start_ns) / S:.2f} | {camera} | {what} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
