"""What an operator needs to see the node keep up, in constant memory: image-callback cost and latency, description
latency minus model time (`diagnostics.py` publishes them). No rclpy in here.

Durations go into log-spaced histograms (bins 2 % wide, 1 us .. 1000 s), so p50/p99 since activation are exact to
a bin however long the node runs. "Model time" is the wall time spent inside the engine's encode/generate calls
(`TimedEngine`): a description's latency minus *all* model time since its newest frame arrived is the node's own
overhead (ingest, waking the worker, prompt and message building, publishing), whatever other model work it queued
behind.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

_LOW_MS = 1e-3
_RATIO = 1.02
_LOG_RATIO = math.log(_RATIO)
_BINS = 2 + int(math.log(1e6 / _LOW_MS) / _LOG_RATIO)


class Histogram:
    """Counts of non-negative millisecond values in log bins; also exact count, sum, min and max."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}  # sparse: a few hundred bins are ever touched, and summaries walk them
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, ms: float) -> None:
        index = 0 if ms <= _LOW_MS else min(_BINS - 1, 1 + int(math.log(ms / _LOW_MS) / _LOG_RATIO))
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total += ms
        self.min = min(self.min, ms)
        self.max = max(self.max, ms)

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                middle = _LOW_MS if index == 0 else _LOW_MS * _RATIO ** (index - 0.5)
                return min(max(middle, self.min), self.max)
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        if not self.count:
            return {"count": 0, "p50": None, "p99": None, "max": None, "mean": None}
        return {"count": self.count, "p50": _round(self.percentile(50)), "p99": _round(self.percentile(99)),
                "max": _round(self.max), "mean": _round(self.total / self.count)}


class TimedEngine:
    """An engine whose encode/generate calls add up to a model clock (seconds spent inside them)."""

    # The public steps too: alert probabilities are computed through them (engine/answer_scores.py).
    _TIMED = frozenset({"encode_frames", "generate", "generate_batch", "embed_prompt", "prefill", "decode_step"})

    def __init__(self, engine: Any) -> None:
        self.inner = engine
        self._spent = 0.0
        self._since: float | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in self._TIMED:
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._since = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                with self._lock:
                    self._spent += time.perf_counter() - self._since
                    self._since = None
        return timed

    def model_seconds(self, now: float | None = None) -> float:
        """Model time up to `now` (perf_counter), counting a call still running."""
        with self._lock:
            running = 0.0 if self._since is None else (time.perf_counter() if now is None else now) - self._since
            return self._spent + max(0.0, running)


@dataclass(frozen=True)
class CallbackToken:
    wall_s: float
    cpu_s: float
    model_s: float


@dataclass(frozen=True)
class _KeptFrame:
    stamp_ns: int
    received_s: float
    ingest_s: float
    model_s: float


class NodeStats:
    def __init__(self, cameras: Iterable[str], model_seconds: Callable[[float], float] | None = None,
                 frames_remembered: int = 256) -> None:
        self._model_seconds = model_seconds or (lambda now: 0.0)
        self.cameras: dict[str, dict[str, Histogram]] = {
            camera: {name: Histogram() for name in ("callback_ms", "kept_ms", "skipped_ms", "kept_cpu_ms",
                                                    "skipped_cpu_ms", "frame_age_ms")}
            for camera in cameras}
        self.descriptions = {name: Histogram() for name in ("latency_ms", "model_ms", "minus_model_ms",
                                                            "minus_all_model_ms", "newest_frame_ingest_ms")}
        self.negative_ages = {camera: 0 for camera in self.cameras}
        self.unmatched_descriptions = 0
        # Receipt of recent kept frames, so a description can be traced back to when its newest frame arrived.
        self._kept = {camera: deque(maxlen=frames_remembered) for camera in self.cameras}
        self._lock = threading.Lock()

    def begin_callback(self) -> CallbackToken:
        now = time.perf_counter()
        return CallbackToken(now, time.thread_time(), self._model_seconds(now))

    def end_callback(self, token: CallbackToken, camera: str, outcome: str, stamp_ns: int, age_ns: int) -> None:
        """`outcome`: kept, skipped or error; `age_ns`: clock now minus the frame's stamp, at the callback's end."""
        wall_ms = (time.perf_counter() - token.wall_s) * 1000.0
        cpu_ms = (time.thread_time() - token.cpu_s) * 1000.0
        histograms = self.cameras.get(camera)
        if histograms is None:
            return
        histograms["callback_ms"].add(wall_ms)
        if outcome in ("kept", "skipped"):
            histograms[f"{outcome}_ms"].add(wall_ms)
            histograms[f"{outcome}_cpu_ms"].add(cpu_ms)
        if age_ns < 0:
            self.negative_ages[camera] += 1  # the camera's clock is ahead of ours
        histograms["frame_age_ms"].add(max(0.0, age_ns / 1e6))
        if outcome == "kept":
            with self._lock:
                self._kept[camera].append(_KeptFrame(stamp_ns, token.wall_s, wall_ms / 1000.0, token.model_s))

    def record_description(self, camera: str, newest_stamp_ns: int, model_ms: float) -> None:
        """Call right after the description was published."""
        now = time.perf_counter()
        with self._lock:
            frame = next((f for f in reversed(self._kept.get(camera, ())) if f.stamp_ns == newest_stamp_ns), None)
        if frame is None:
            self.unmatched_descriptions += 1
            return
        latency_ms = (now - frame.received_s) * 1000.0
        all_model_ms = (self._model_seconds(now) - frame.model_s) * 1000.0
        for name, value in (("latency_ms", latency_ms), ("model_ms", model_ms),
                            ("minus_model_ms", latency_ms - model_ms),
                            ("minus_all_model_ms", latency_ms - all_model_ms),
                            ("newest_frame_ingest_ms", frame.ingest_s * 1000.0)):
            self.descriptions[name].add(max(0.0, value))

    def camera_values(self, camera: str) -> dict[str, Any]:
        values = _flatten({name: h.summary() for name, h in self.cameras[camera].items()})
        values["negative_frame_ages"] = self.negative_ages[camera]
        return values

    def description_values(self) -> dict[str, Any]:
        values = _flatten({name: h.summary() for name, h in self.descriptions.items()})
        values["unmatched"] = self.unmatched_descriptions
        return values


def _flatten(nested: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}.{key}": value for name, inner in nested.items() for key, value in inner.items()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
