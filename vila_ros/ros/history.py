"""Bounded history of what the node published, searchable by time window, text and kind (QueryEvents)."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class Record:
    stamp_ns: int
    kind: str  # "descriptions" or "alerts"
    searchable_text: str
    message: Any


class History:
    KINDS = ("descriptions", "alerts")

    def __init__(self, max_records: int = 1000) -> None:
        self._records = {kind: deque(maxlen=max_records) for kind in self.KINDS}
        self._lock = threading.Lock()
        self.max_records = max_records

    def add(self, kind: str, stamp_ns: int, searchable_text: str, message: Any) -> None:
        with self._lock:
            self._records[kind].append(Record(stamp_ns, kind, searchable_text.lower(), message))

    def search(self, kind: str = "", start_ns: int = 0, end_ns: int = 0, window_s: float = 0.0, text: str = "",
               max_results: int = 0) -> dict[str, list[Any]]:
        """Messages of `kind` ("" = both) stamped in [start, end], oldest first, the newest `max_results` kept.

        end 0 = up to the newest record; window_s > 0 = the last window_s seconds before end (overrides start).
        """
        if kind not in ("",) + self.KINDS:
            raise ValueError(f"kind must be 'descriptions', 'alerts' or empty, not {kind!r}")
        if window_s < 0:
            raise ValueError("window_seconds must not be negative")
        kinds = self.KINDS if not kind else (kind,)
        needle = text.lower()
        limit = max_results if max_results > 0 else self.max_records
        with self._lock:
            snapshot = {k: list(self._records[k]) for k in kinds}
        newest = max((r.stamp_ns for records in snapshot.values() for r in records), default=0)
        end = end_ns if end_ns > 0 else newest
        start = end - int(window_s * NANOSECONDS) if window_s > 0 else start_ns
        if start > end:
            raise ValueError("start is after end")
        result = {k: [] for k in self.KINDS}
        for k, records in snapshot.items():
            matching = [r for r in records if start <= r.stamp_ns <= end and needle in r.searchable_text]
            # Cameras publish interleaved, so arrival order is not stamp order.
            matching.sort(key=lambda r: r.stamp_ns)
            result[k] = [r.message for r in matching[-limit:]]
        return result
