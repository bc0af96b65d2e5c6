"""Corner-case event bookkeeping: from per-evaluation detections to BEGIN / ONGOING / END alerts with stable ids.

A category must be detected in `confirm` consecutive evaluations to BEGIN (one noisy answer is not an event), is
reported ONGOING at most every `ongoing_period_s` while detections continue, and ENDs after `clear` consecutive
evaluations without it. After an END, the same category on the same camera waits `cooldown_s` before a new BEGIN
(the Jetson VLM alert service uses a per-rule cooldown for the same reason: a flickering answer must not page
the operator every second). No rclpy in here.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

NANOSECONDS = 1_000_000_000
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


@dataclass
class _Track:
    history: deque = field(default_factory=lambda: deque(maxlen=8))
    positive_streak: int = 0
    negative_streak: int = 0
    active_id: str | None = None
    last_report_ns: int = 0
    ended_ns: int | None = None


@dataclass
class EventTracker:
    confirm: int = 1
    clear: int = 2
    ongoing_period_s: float = 2.0
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        if self.confirm < 1 or self.clear < 1:
            raise ValueError("confirm and clear must be at least 1 evaluation")
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._counter = 0

    def update(self, camera: str, categories: Sequence[str], detected: Sequence[str], stamp_ns: int,
               evidence_stamps_ns: Sequence[int], text: str = "") -> list[AlertUpdate]:
        """One evaluation of `categories` on `camera`; `detected` is the subset the model reported."""
        detected_set = set(detected)
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
            confidence = sum(track.history) / len(track.history)
            state = self._transition(track, camera, category, positive, stamp_ns)
            if state is not None:
                updates.append(AlertUpdate(track.active_id if state != END else self._ended_id(track), camera,
                                           category, state, stamp_ns, confidence, tuple(evidence_stamps_ns), text))
                if state == END:
                    track.active_id = None
        return updates

    def active(self) -> list[tuple[str, str, str]]:
        return [(camera, category, track.active_id) for (camera, category), track in self._tracks.items()
                if track.active_id]

    def _transition(self, track: _Track, camera: str, category: str, positive: bool, stamp_ns: int) -> int | None:
        if track.active_id is None:
            if not positive or track.positive_streak < self.confirm:
                return None
            if track.ended_ns is not None and 0 <= stamp_ns - track.ended_ns < self.cooldown_s * NANOSECONDS:
                return None
            self._counter += 1
            track.active_id = f"{camera}/{category}/{self._counter}"
            track.last_report_ns = stamp_ns
            return BEGIN
        if positive:
            if stamp_ns - track.last_report_ns >= self.ongoing_period_s * NANOSECONDS:
                track.last_report_ns = stamp_ns
                return ONGOING
            return None
        if track.negative_streak >= self.clear:
            track.ended_ns = stamp_ns
            track.last_report_ns = stamp_ns
            return END
        return None

    @staticmethod
    def _ended_id(track: _Track) -> str:
        return track.active_id or ""
