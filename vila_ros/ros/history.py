"""Bounded history of what the node published, searchable by time window, text and kind (QueryEvents)."""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from vila_ros.tasks import NANOSECONDS


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
               max_results: int = 0, now_ns: int | None = None) -> dict[str, list[Any]]:
        """Messages of `kind` ("" = both) stamped in [start, end], oldest first, the newest `max_results` kept.

        end 0 = no upper bound; window_s > 0 = the last window_s seconds before end, or before `now_ns` (the node's
        clock) when end is 0 (overrides start). With a clock a window is never measured from the newest stamp seen:
        a few frames stamped a day ahead must not hide the real history. Without one (None), from the newest.
        """
        if kind not in ("",) + self.KINDS:
            raise ValueError(f"kind must be 'descriptions', 'alerts' or empty, not {kind!r}")
        if not math.isfinite(window_s) or window_s < 0:
            raise ValueError(f"window_seconds must be a finite number of seconds, at least 0: got {window_s!r}")
        kinds = self.KINDS if not kind else (kind,)
        needle = text.lower()
        limit = max_results if max_results > 0 else self.max_records
        with self._lock:
            snapshot = {k: list(self._records[k]) for k in kinds}
        if end_ns > 0:
            reference = end = end_ns
        else:  # no upper bound: frames stamped ahead of the clock are dropped (or bounded) at ingest
            end = 2**63
            reference = now_ns if now_ns is not None else max(
                (r.stamp_ns for records in snapshot.values() for r in records), default=0)
        # Integer arithmetic: a huge window_s is just "everything before the reference".
        start = reference - min(reference, int(window_s * NANOSECONDS)) if window_s > 0 else start_ns
        if start > end:
            raise ValueError("start is after end")
        result = {k: [] for k in self.KINDS}
        for k, records in snapshot.items():
            matching = [r for r in records if start <= r.stamp_ns <= end and needle in r.searchable_text]
            # Cameras publish interleaved, so arrival order is not stamp order.
            matching.sort(key=lambda r: r.stamp_ns)
            result[k] = [r.message for r in matching[-limit:]]
        return result
