"""Scoring a replay against its ground truth (`<bag>.truth.json`): recall of the planted events, false alerts,
frames-to-alert, description latency and model time. Pure: messages in, numbers out (no rclpy, no node)."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vila_ros import tasks
from vila_ros.msg import CornerCaseAlert
from vila_ros.ros.conversion import stamp_to_ns
from vila_ros.tasks import NANOSECONDS


@dataclass
class Received:
    """A message a listener received, with the monotonic wall time it arrived."""

    message: Any
    wall: float


def load_truth(bag: Path, truth_file: Path | None = None) -> dict:
    """The bag's ground truth: `truth_file`, or the `.truth.json` sidecar the simulator wrote beside it."""
    from vila_ros.sim.writers import truth_path

    path = truth_file or truth_path(bag)
    if not path.is_file():
        raise FileNotFoundError(f"no ground truth beside {bag}: expected {path}")
    return json.loads(path.read_text())


def score(truths: list[dict], descriptions: list[Received], alerts: list[Received],
          published: dict[int, float], clip_fps: float = tasks.CLIP_FPS) -> dict:
    """Match each planted event with the first unused BEGIN of its camera and category in its time window (or one
    raised earlier and still active then); every other BEGIN is a false alert. `published` maps a frame's recorded
    stamp to the wall time it went out, for description latency."""
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
        end_ns = event["end_ns"] if event["end_ns"] is not None else event["start_ns"] + 10 * NANOSECONDS
        match = None
        for index, alert in enumerate(begins):
            stamp = stamp_to_ns(alert.header.stamp)
            if (index not in used and alert.camera == camera and alert.category == event["category"]
                    and event["start_ns"] - NANOSECONDS // 2 <= stamp <= end_ns + 2 * NANOSECONDS):
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
            seconds = max(0.0, (stamp_to_ns(begins[match].header.stamp) - event["start_ns"]) / NANOSECONDS)
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


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
