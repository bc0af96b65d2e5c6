"""The inference worker's vocabulary: its settings, what it hands the node (descriptions, answers, timings), the
queries it takes and its counters. No rclpy, no engine: `worker.py` does the work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from vila_ros import tasks
from vila_ros.ros.frame_buffer import Frame
from vila_ros.tasks import NANOSECONDS


@dataclass(frozen=True)
class AlertRule:
    """A yes/no question asked on every alert check; a "yes" means the category is present."""

    category: str
    question: str
    severity: int = tasks.WARNING


@dataclass(frozen=True)
class WorkerSettings:
    num_frames: int = 8
    min_frames: int = 8
    describe_period_s: float = 2.0  # 0 disables descriptions
    describe_prompt: str = tasks.DESCRIBE_PROMPT
    describe_max_new_tokens: int = 48
    describe_regex: str = ""  # every description matches it whole (constrained decoding); "" = free text
    alert_period_s: float = 1.0  # 0 disables alert checks
    alert_prompt: str = tasks.ALERT_PROMPT
    alert_categories: tuple[str, ...] = tasks.CATEGORY_NAMES
    alert_rules: tuple[AlertRule, ...] = ()
    alert_max_new_tokens: int = 24
    # Per-category probability thresholds (category, threshold); empty: categories come from the generated answer.
    # With them, a category is detected when the model's probability of it as the reply reaches its threshold,
    # and an active alert stays detected down to `alert_release` times it (hysteresis against flicker).
    alert_thresholds: tuple[tuple[str, float], ...] = ()
    alert_release: float = 0.5
    # The model's world gate (`model/world_gate.py`) or None: a window whose newest frame lies outside the world the
    # model was trained on is described as an unfamiliar scene and raises no scene category (lens faults still).
    world_gate: Any = None
    query_max_new_tokens: int = 64
    query_max_new_tokens_limit: int = 256
    temperature: float = 0.0
    backoff_initial_s: float = 1.0  # first wait before retrying a failed periodic job; doubles per failure
    backoff_max_s: float = 30.0


# A periodic job is due once the newest frame is this share of its period past the frame it last ran on: kept frames
# sit on a clip-rate grid that a camera's own rate only approximates (4 fps of a 10 fps camera keeps frames 0.2 and
# 0.3 s apart), and a strict period would skip every other due run.
PERIOD_SLACK = 0.95


def period_elapsed(last_ns: int | None, newest_ns: int, period_s: float) -> bool:
    """Whether a periodic job that last ran on the frame stamped `last_ns` (None: never) is due at `newest_ns`. A
    newest frame older than the last run's (a clock jumping back) makes it due at once."""
    if last_ns is None or newest_ns < last_ns:
        return True
    return newest_ns - last_ns >= period_s * NANOSECONDS * PERIOD_SLACK


def detected_by_probability(probabilities: Mapping[str, float], thresholds: Mapping[str, float],
                            categories: Iterable[str], is_active: Callable[[str], bool],
                            release: float) -> list[str]:
    """The categories whose probability reaches their threshold (0.5 where none is given), or `release` times it
    while their alert is active: an alert does not flicker off on a slightly lower window."""
    detected = []
    for category in categories:
        threshold = thresholds.get(category, 0.5) * (release if is_active(category) else 1.0)
        if probabilities.get(category, 0.0) >= threshold:
            detected.append(category)
    return detected


@dataclass
class Timings:
    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    generated_tokens: int = 0


@dataclass(frozen=True)
class Description:
    camera: str
    frames: tuple[Frame, ...]
    text: str
    prompt_id: str
    timings: Timings


@dataclass(frozen=True)
class SceneQuery:
    question: str
    camera: str = ""
    window_seconds: float = 0.0
    window_frames: int = 0
    max_new_tokens: int = 0
    deadline: float = 0.0  # time.monotonic() after which nobody waits for the answer; 0 = none
    json_schema: str = ""  # the answer must validate against it; "" = free text
    on_token: Callable[[int, str], bool | None] | None = None  # streamed answer (engine TokenCallback); True cancels


@dataclass(frozen=True)
class SceneAnswer:
    answer: str
    frames: tuple[Frame, ...]
    timings: Timings


class QueryError(ValueError):
    """A scene query that cannot be answered (unknown camera, no frames yet); the message says why."""


@dataclass
class WorkerStats:
    descriptions: int = 0
    alert_checks: int = 0
    queries: int = 0
    failures: int = 0
    last_error: str = ""
    last_latency_ms: float = 0.0
    busy_s: float = 0.0
    periods: int = 0  # batches of periodic work (all cameras due at once)
    period_rows: int = 0  # generations those batches held
    last_period_ms: float = 0.0
    unfamiliar_checks: int = 0  # alert checks the world gate found outside the model's world
    unfamiliar_descriptions: int = 0  # descriptions it answered "An unfamiliar scene." without the model
