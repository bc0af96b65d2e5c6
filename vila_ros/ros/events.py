"""Corner-case event bookkeeping: from per-evaluation detections to BEGIN / ONGOING / END alerts with stable ids.

A category must be detected in `confirm` consecutive evaluations to BEGIN (one noisy answer is not an event), is
reported ONGOING at most every `ongoing_period_s` while detections continue, and ENDs after `clear` consecutive
evaluations without it. After an END, the same category on the same camera waits `cooldown_s` before a new BEGIN
(the Jetson VLM alert service uses a per-rule cooldown for the same reason: a flickering answer must not page
the operator every second). Every update is a complete alert: severity, text and the evidence frames' frame_id
travel with it, so whoever publishes it has nothing left to work out. No rclpy in here.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vila_ros import tasks
from vila_ros.tasks import NANOSECONDS

BEGIN, ONGOING, END = 0, 1, 2  # as in msg/CornerCaseAlert.msg


@dataclass(frozen=True)
class AlertUpdate:
    alert_id: str
    camera: str
    category: str
    state: int
    stamp_ns: int
    confidence: float
    evidence_stamps_ns: tuple[int, ...]
    text: str
    severity: int
    frame_id: str


def category_severity(category: str) -> int:
    """Severity of a built-in category; WARNING for any other (a user's rule without its own)."""
    known = tasks.CATEGORIES.get(category)
    return known.severity if known else tasks.WARNING


def category_text(category: str) -> str:
    """What an alert says when the model's answer gave no text of its own."""
    known = tasks.CATEGORIES.get(category)
    return known.description if known else category


class AlertIds:
    """Alert ids `<camera>/<category>/<n>`, n counting up from 1 (or from `resume`): unique for the life of the
    source. `run` ("" or a run id) goes before n, for a node without an event log to continue from."""

    def __init__(self, run: str = "") -> None:
        self._last = 0
        self._lock = threading.Lock()
        self.run = run

    def resume(self, after: int) -> None:
        """Count on from `after` (the highest n a previous run used), so a restarted node never reuses an id; never
        goes back."""
        with self._lock:
            self._last = max(self._last, after)

    def new(self, camera: str, category: str) -> str:
        with self._lock:
            self._last += 1
            number = self._last
        return f"{camera}/{category}/{self.run}-{number}" if self.run else f"{camera}/{category}/{number}"


@dataclass(frozen=True)
class TrackerSettings:
    """How detections become events; validated here, so a bad value is refused before it reaches a tracker."""

    confirm: int = 1
    clear: int = 2
    ongoing_period_s: float = 2.0
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("confirm", "clear"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{name} must be a whole number of evaluations, at least 1: {count!r}")
        for name in ("ongoing_period_s", "cooldown_s"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
                raise ValueError(f"{name} must be a finite number of seconds, at least 0: {seconds!r}")


@dataclass
class _Track:
    history: deque = field(default_factory=lambda: deque(maxlen=8))
    positive_streak: int = 0
    negative_streak: int = 0
    active_id: str | None = None
    last_report_ns: int = 0
    last_stamp_ns: int = 0
    ended_ns: int | None = None
    severity: int = tasks.WARNING
    frame_id: str = ""
    confidence: float | None = None  # the model's latest probability, when the checks give one


class EventTracker:
    """Tracks of (camera, category). `settings` may be replaced at any time (live parameter changes)."""

    def __init__(self, settings: TrackerSettings | None = None, ids: AlertIds | None = None, **fields: Any) -> None:
        """`settings`, or its fields as keywords: `EventTracker(confirm=2, clear=1)`; `ids`: shared with the node's
        other alert sources (so one counter covers a whole run)."""
        self.settings = settings if settings is not None else TrackerSettings(**fields)
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._ids = ids or AlertIds()

    def update(self, camera: str, categories: Sequence[str], detected: Sequence[str], stamp_ns: int,
               evidence_stamps_ns: Sequence[int], text: str = "", frame_id: str = "",
               severities: Mapping[str, int] | None = None,
               confidences: Mapping[str, float] | None = None) -> list[AlertUpdate]:
        """One evaluation of `categories` on `camera`; `detected` is the subset the model reported. `severities`
        holds the severity of categories that are not built in (a rule's); `frame_id` is the evidence frames'.
        `confidences`: the model's probability per category, what alerts then carry (else the share of recent
        evaluations that detected it)."""
        detected_set = set(detected)
        severities = severities or {}
        updates = []
        for category in categories:
            track = self._tracks.setdefault((camera, category), _Track())
            positive = category in detected_set
            track.history.append(positive)
            if positive:
                track.positive_streak += 1
                track.negative_streak = 0
            else:
                track.negative_streak += 1
                track.positive_streak = 0
            track.last_stamp_ns = stamp_ns
            track.frame_id = frame_id
            track.severity = (category_severity(category) if category in tasks.CATEGORIES
                              else severities.get(category, tasks.WARNING))
            state = self._transition(track, camera, category, positive, stamp_ns)
            if confidences and category in confidences:
                track.confidence = float(confidences[category])
            if state is not None:
                updates.append(self._alert(track, camera, category, state, stamp_ns, tuple(evidence_stamps_ns),
                                           text))
                if state == END:
                    track.active_id = None
        return updates

    def is_active(self, camera: str, category: str) -> bool:
        track = self._tracks.get((camera, category))
        return track is not None and track.active_id is not None

    def end_all(self, text: str) -> list[AlertUpdate]:
        """END every active alert (nobody watches the cameras any more) and forget all tracks."""
        updates = [self._alert(track, camera, category, END, track.last_stamp_ns, (), text)
                   for (camera, category), track in self._tracks.items() if track.active_id]
        self._tracks.clear()
        return updates

    def _alert(self, track: _Track, camera: str, category: str, state: int, stamp_ns: int,
               evidence: tuple[int, ...], text: str) -> AlertUpdate:
        confidence = (track.confidence if track.confidence is not None
                      else sum(track.history) / len(track.history))
        return AlertUpdate(track.active_id or "", camera, category, state, stamp_ns, confidence, evidence,
                           text or category_text(category), track.severity, track.frame_id)

    def _transition(self, track: _Track, camera: str, category: str, positive: bool, stamp_ns: int) -> int | None:
        settings = self.settings
        if track.active_id is None:
            if not positive or track.positive_streak < settings.confirm:
                return None
            if track.ended_ns is not None and 0 <= stamp_ns - track.ended_ns < settings.cooldown_s * NANOSECONDS:
                return None
            track.active_id = self._ids.new(camera, category)
            track.last_report_ns = stamp_ns
            return BEGIN
        if positive:
            if stamp_ns - track.last_report_ns >= settings.ongoing_period_s * NANOSECONDS:
                track.last_report_ns = stamp_ns
                return ONGOING
            return None
        if track.negative_streak >= settings.clear:
            track.ended_ns = stamp_ns
            track.last_report_ns = stamp_ns
            return END
        return None
