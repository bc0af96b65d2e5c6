"""Replay bags with ground truth into a perception node process and score what it says (`vila-ros replay-test`).

The node runs as its own process, exactly as deployed (`harness`); this process replays the bags over DDS, listens
like any other subscriber, scores the alerts against the planted events of the bags' `.truth.json` sidecars
(`scoring`: recall, false alerts, frames-to-alert, and latency from publishing a frame to receiving the description
whose newest frame it is), and writes `replay_test.json` and a timeline, `report.md`.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

from vila_ros import tasks
from vila_ros.ros.conversion import stamp_to_ns
from vila_ros.ros.outputs import STATE_NAMES
from vila_ros.tasks import NANOSECONDS
from vila_ros.tools.harness import NODE_NAME, Listener, isolated_node, start_node, stop_node, use_dds_profile
from vila_ros.tools.scoring import Received, load_truth, score
from vila_ros.tools.stream_eval import records_from_messages, score_records


def run_replay_test(bags: list[Path], out_dir: Path, model_dir: str = "", rate: float = 1.0,
                    node_parameters: dict[str, str] | None = None, printer: Callable[[Any], None] | None = None,
                    settle_s: float = 3.0,
                    questions: tuple[tuple[str, str], ...] = (), truth_files: list[Path] | None = None,
                    clock: bool = False) -> dict:
    """Run a node on the bags (replayed concurrently, one or more cameras each) and return the scored report.

    `questions`, (question, camera) pairs (camera "" for all of them), are asked through QueryScene after the
    replay; their answers go into the report. With `clock`, the replay publishes /clock and the node runs on it
    (use_sim_time).
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
    (out_dir / "alerts.jsonl").unlink(missing_ok=True)  # a report of this run only (a node continues a log)
    dds_profile = use_dds_profile()  # raw frames reach the node (set before this process's first participant)
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
        answers = [_ask(question, camera) for question, camera in questions]
    finally:
        listener.close()
        code = stop_node(process)
    report = score(truths, listener.descriptions, listener.alerts, published)
    # The stream evaluation's figures of the same run, scored by the same code as `vila-ros eval-stream` in-process.
    records = records_from_messages(listener.descriptions, listener.alerts)
    report["stream"] = score_records(cameras, records, float(parameters.get("clip_fps", tasks.CLIP_FPS)))
    report["stream"]["records"] = {"alerts": records.alerts, "descriptions": records.descriptions}
    report["answers"] = answers
    report.update({"bags": [str(b) for b in bags], "rate": rate, "node_exit_code": code, "node_log": str(log_path),
                   "parameters": parameters, "dds_profile": dds_profile})
    (out_dir / "replay_test.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(timeline_markdown(truths, listener.descriptions, listener.alerts, report))
    return report


def _ask(question: str, camera: str) -> dict:
    from vila_ros.srv import QueryScene
    from vila_ros.tools.client import call_service

    with isolated_node("vila_ros_replay_test_query") as node:
        response = call_service(node, QueryScene, f"/{NODE_NAME}/query_scene",
                                QueryScene.Request(question=question, camera=camera), timeout_sec=120)
    return {"question": question, "camera": camera, "success": response.success, "answer": response.answer,
            "error_message": response.error_message, "latency_ms": round(response.latency_ms, 1),
            "frames": len(response.frame_stamps)}


def _replay_all(bags: list[Path], rate: float, published: dict[int, float], clock: bool = False) -> None:
    from vila_ros.tools.replay import replay_bag

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


def timeline_markdown(truths: list[dict], descriptions: list[Received], alerts: list[Received], report: dict) -> str:
    """`report.md`: the scores, then truth segments and events, descriptions and alerts in one timeline."""
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
        lines.append(f"| {(stamp - start_ns) / NANOSECONDS:.2f} | {camera} | {what} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
