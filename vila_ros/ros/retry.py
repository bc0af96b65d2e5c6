"""Failure streaks of the worker's periodic jobs, with exponential back-off. No rclpy in here.

A job is one kind of periodic work on one camera ("alerts" on "front"). When it fails (the engine raised, e.g.
on NaN logits) it is not run again until its back-off has passed: initial, then doubled after each further
failure in a row, up to the maximum. A failing model then costs a bounded, shrinking share of the inference
thread, queries keep their turn, and a fault that goes away (a transient device error) is recovered from by the
next retry. Diagnostics read thread-safe snapshots.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

JobKey = tuple[str, str]  # (camera, kind)


@dataclass
class JobHealth:
    consecutive_failures: int = 0
    failures: int = 0
    backoff_s: float = 0.0  # the wait before the next retry (0 while healthy)
    retry_at: float = 0.0  # time.monotonic() of the next retry
    last_error: str = ""


def backoff_seconds(consecutive_failures: int, initial_s: float, maximum_s: float) -> float:
    """initial_s, 2 * initial_s, 4 * initial_s, ... capped at maximum_s (0 before any failure)."""
    if consecutive_failures <= 0:
        return 0.0
    # The exponent is capped too: a streak of thousands must not overflow a float.
    return min(maximum_s, initial_s * 2.0 ** min(consecutive_failures - 1, 60))


class RetryTracker:
    def __init__(self) -> None:
        self._jobs: dict[JobKey, JobHealth] = {}
        self._lock = threading.Lock()

    def may_run(self, key: JobKey, now: float) -> bool:
        with self._lock:
            health = self._jobs.get(key)
            return health is None or health.consecutive_failures == 0 or now >= health.retry_at

    def is_retry(self, key: JobKey) -> bool:
        """Whether the job's last run failed (its next run retries, even on the frames that failed)."""
        with self._lock:
            health = self._jobs.get(key)
            return health is not None and health.consecutive_failures > 0

    def failed(self, key: JobKey, error: str, now: float, initial_s: float, maximum_s: float) -> JobHealth:
        with self._lock:
            health = self._jobs.setdefault(key, JobHealth())
            health.consecutive_failures += 1
            health.failures += 1
            health.backoff_s = backoff_seconds(health.consecutive_failures, initial_s, maximum_s)
            health.retry_at = now + health.backoff_s
            health.last_error = error
            return dataclasses.replace(health)

    def succeeded(self, key: JobKey) -> int:
        """Ends the job's failure streak; returns how long it was."""
        with self._lock:
            health = self._jobs.get(key)
            if health is None:
                return 0
            streak, health.consecutive_failures, health.backoff_s = health.consecutive_failures, 0, 0.0
            return streak

    def next_retry_at(self) -> float | None:
        with self._lock:
            due = [h.retry_at for h in self._jobs.values() if h.consecutive_failures]
        return min(due) if due else None

    def snapshot(self) -> dict[JobKey, JobHealth]:
        with self._lock:
            return {key: dataclasses.replace(health) for key, health in self._jobs.items()}
