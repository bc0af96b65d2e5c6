"""What the node sends out, built from the worker's results: messages, the alert event log, the annotated image."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from vila_ros.msg import CornerCaseAlert, SceneDescription
from vila_ros.ros.conversion import ns_to_stamp, rgb_to_image, stamp_to_ns
from vila_ros.ros.events import AlertUpdate
from vila_ros.ros.frame_buffer import Frame
from vila_ros.ros.worker import Description

STATE_NAMES = ("BEGIN", "ONGOING", "END")
SEVERITY_NAMES = ("INFO", "WARNING", "CRITICAL")


def description_message(description: Description, model_id: str) -> SceneDescription:
    msg = SceneDescription()
    newest = description.frames[-1]
    msg.header.stamp = ns_to_stamp(newest.stamp_ns)
    msg.header.frame_id = newest.frame_id
    msg.cameras = sorted({f.camera for f in description.frames})
    msg.frame_stamps = [ns_to_stamp(f.stamp_ns) for f in description.frames]
    msg.frame_cameras = [f.camera for f in description.frames]
    msg.text = description.text
    msg.model_id = model_id
    msg.prompt_id = description.prompt_id
    timings = description.timings
    msg.vision_ms, msg.prefill_ms, msg.decode_ms = timings.vision_ms, timings.prefill_ms, timings.decode_ms
    msg.generated_tokens = timings.generated_tokens
    return msg


def alert_message(update: AlertUpdate) -> CornerCaseAlert:
    msg = CornerCaseAlert()
    msg.header.stamp = ns_to_stamp(update.stamp_ns)
    msg.header.frame_id = update.frame_id
    msg.alert_id = update.alert_id
    msg.category = update.category
    msg.severity = update.severity
    msg.state = update.state
    msg.text = update.text
    msg.confidence = float(update.confidence)
    msg.camera = update.camera
    msg.evidence_stamps = [ns_to_stamp(ns) for ns in update.evidence_stamps_ns]
    return msg


def alert_record(msg: CornerCaseAlert) -> dict:
    return {"stamp_ns": stamp_to_ns(msg.header.stamp), "alert_id": msg.alert_id,
            "camera": msg.camera, "category": msg.category, "severity": SEVERITY_NAMES[msg.severity],
            "state": STATE_NAMES[msg.state], "confidence": round(float(msg.confidence), 4), "text": msg.text,
            "evidence_stamps_ns": [stamp_to_ns(s) for s in msg.evidence_stamps]}


class EventLog:
    """Alerts appended as JSON lines, flushed per line: a kill -9 loses nothing already published.

    A write error (full disk, removed directory) is counted and reported, never raised: losing the log must not
    stop the alerts themselves.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path).expanduser() if path else None
        self.written = 0
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            except OSError as error:
                self._fail(error)

    def append(self, record: dict) -> bool:
        if self._file is None:
            return False
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as error:
                self._fail(error)
                return False
        self.written += 1
        return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None

    def _fail(self, error: OSError) -> None:
        self.errors += 1
        self.last_error = f"{self.path}: {error}"


_ALERT_COLOURS = {0: (80, 200, 255), 1: (255, 190, 0), 2: (255, 40, 40)}


class Overlay:
    """What `~/annotated_image` draws over the newest frame: the latest description and the active alerts."""

    def __init__(self) -> None:
        self.description = ""
        self.alerts: dict[str, tuple[str, int]] = {}  # alert id -> (camera/category, severity)
        self._lock = threading.Lock()  # the worker adds while a lifecycle transition clears

    def describe(self, camera: str, text: str) -> None:
        self.description = f"[{camera}] {text}"

    def alert(self, msg: CornerCaseAlert) -> None:
        with self._lock:
            if msg.state == CornerCaseAlert.END:
                self.alerts.pop(msg.alert_id, None)
            else:
                self.alerts[msg.alert_id] = (f"{msg.camera}/{msg.category}", msg.severity)

    def clear(self) -> None:
        with self._lock:
            self.alerts.clear()
        self.description = ""

    def draw(self, frame: Frame):
        with self._lock:
            alerts = list(self.alerts.values())
        return annotate(frame.rgb, self.description, alerts, frame.stamp_ns, frame.frame_id)


def annotate(rgb: np.ndarray, description: str, active_alerts: Sequence[tuple[str, int]], stamp_ns: int,
             frame_id: str):
    """The frame with the latest description along the bottom and active alerts along the top, as an Image."""
    image = np.ascontiguousarray(rgb).copy()
    height, width = image.shape[:2]
    scale = max(0.35, width / 1400)
    line_height = int(28 * scale) + 6
    y = line_height
    for category, severity in active_alerts:
        label = f"ALERT {category}"
        (text_width, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        colour = _ALERT_COLOURS.get(severity, (255, 0, 0))
        cv2.rectangle(image, (4, y - line_height + 6), (12 + text_width, y + 4), colour, -1)
        cv2.putText(image, label, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += line_height
    lines = _wrap(description, max(10, int(width / (11 * scale))))
    top = height - line_height * len(lines) - 6
    if lines:
        overlay = image.copy()
        cv2.rectangle(overlay, (0, top), (width, height), (0, 0, 0), -1)
        image = cv2.addWeighted(overlay, 0.55, image, 0.45, 0)
    for index, line in enumerate(lines):
        cv2.putText(image, line, (6, top + line_height * (index + 1) - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return rgb_to_image(image, stamp_ns, frame_id)


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines[-4:]
