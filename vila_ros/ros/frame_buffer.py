"""Rolling per-camera frame buffers, bounded in time, count and memory.

Frames are kept at the model's clip rate (a 30 fps camera feeding a model trained on 4 fps clips keeps every
7th-8th frame), decided from the header stamp *before* decoding, so dropped frames cost almost nothing. Each kept
frame carries its vision features once computed: the projector's tokens of one frame never depend on another's,
so every window that contains a frame reuses them. Ages are measured against the newest stamp, not the wall clock,
so replayed bags and simulated time behave like live cameras. No rclpy in here.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vila_ros.tasks import NANOSECONDS


@dataclass
class Frame:
    camera: str
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    features: Any = None  # torch.Tensor [tokens, hidden] once encoded

    @property
    def nbytes(self) -> int:
        feature_bytes = 0 if self.features is None else self.features.numel() * self.features.element_size()
        return int(self.rgb.nbytes) + feature_bytes


@dataclass
class BufferStats:
    received: int = 0
    kept: int = 0
    skipped_rate: int = 0  # arrived sooner than the clip rate needs
    skipped_out_of_order: int = 0
    decode_errors: int = 0
    bad_stamps: int = 0  # not a valid ROS time
    future_stamps: int = 0  # further ahead of the node's clock than its bound
    time_resets: int = 0
    evicted: int = 0
    last_error: str = ""
    # time.monotonic() of recent dropped frames (any reason above): diagnostics judge a window, not the whole run
    error_times: deque = field(default_factory=lambda: deque(maxlen=256))

    def recent_errors(self, now: float, window_s: float) -> int:
        """Frames dropped as unreadable within the last `window_s` seconds before `now` (monotonic)."""
        return sum(1 for t in list(self.error_times) if now - t <= window_s)


@dataclass
class CameraBuffer:
    """Frames of one camera, oldest first. Thread-safe: callbacks add while the inference worker reads."""

    camera: str
    keep_interval_s: float
    max_age_s: float
    max_frames: int
    max_bytes: int
    time_reset_s: float = 1.0  # a stamp this far behind the newest means the clock jumped back (bag loop, sim)
    stats: BufferStats = field(default_factory=BufferStats)

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.max_age_s <= 0 or self.max_bytes <= 0 or self.keep_interval_s < 0:
            raise ValueError(f"invalid buffer bounds for camera {self.camera!r}")
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._last_kept_ns: int | None = None
        self._next_due_ns = 0
        self._lock = threading.Lock()

    def wants(self, stamp_ns: int) -> bool:
        """Whether a frame stamped `stamp_ns` would be kept; counts the frame as received."""
        with self._lock:
            self.stats.received += 1
            last = self._last_kept_ns
            if last is None:
                return True
            if stamp_ns <= last:
                if last - stamp_ns >= self.time_reset_s * NANOSECONDS:
                    return True  # add() will reset the buffer
                self.stats.skipped_out_of_order += 1
                return False
            # Keep the first frame at or after each tick of a clip-rate grid (5 % early allowed for stamp jitter),
            # so a 30 fps camera yields 4.0 fps on average rather than every 7th frame (4.3 fps).
            if stamp_ns < self._next_due_ns - 0.05 * self.keep_interval_s * NANOSECONDS:
                self.stats.skipped_rate += 1
                return False
            return True

    def add(self, frame: Frame) -> None:
        with self._lock:
            if self._last_kept_ns is not None and frame.stamp_ns <= self._last_kept_ns:
                # wants() let a backwards jump through: the time source restarted, old frames are from another run.
                self.stats.time_resets += 1
                self._frames.clear()
                self._bytes = 0
            self._frames.append(frame)
            self._bytes += frame.nbytes
            interval_ns = int(self.keep_interval_s * NANOSECONDS)
            lateness = frame.stamp_ns - self._next_due_ns
            if self._last_kept_ns is not None and -0.05 * interval_ns <= lateness < interval_ns:
                self._next_due_ns += interval_ns
            else:  # first frame, or the camera paused: restart the grid here
                self._next_due_ns = frame.stamp_ns + interval_ns
            self._last_kept_ns = frame.stamp_ns
            self.stats.kept += 1
            self._evict()

    def record_error(self, message: str, received: bool = False, counter: str = "decode_errors") -> None:
        """A dropped frame, counted by `counter` of the stats; `received`: one `wants` never saw."""
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            if received:
                self.stats.received += 1
            self.stats.last_error = message
            self.stats.error_times.append(time.monotonic())

    def window(self, seconds: float = 0.0, max_frames: int = 0) -> list[Frame]:
        """The newest frames: those within `seconds` of the newest stamp (0 = all kept), at most `max_frames`."""
        with self._lock:
            frames = list(self._frames)
        if frames and seconds > 0:
            oldest_ns = frames[-1].stamp_ns - int(seconds * NANOSECONDS)
            frames = [f for f in frames if f.stamp_ns >= oldest_ns]
        if max_frames > 0:
            frames = frames[-max_frames:]
        return frames

    def attach_features(self, frame: Frame, features: Any) -> None:
        with self._lock:
            if frame.features is None and any(f is frame for f in self._frames):
                frame.features = features
                self._bytes += frame.nbytes - int(frame.rgb.nbytes)
                self._evict()
            elif frame.features is None:
                frame.features = features  # already evicted: the caller may still use it

    def newest_stamp_ns(self) -> int | None:
        with self._lock:
            return self._frames[-1].stamp_ns if self._frames else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
            self._last_kept_ns = None
            self._next_due_ns = 0

    def _evict(self) -> None:
        newest = self._frames[-1].stamp_ns
        while self._frames and (
            len(self._frames) > self.max_frames
            or newest - self._frames[0].stamp_ns > self.max_age_s * NANOSECONDS
            or (self._bytes > self.max_bytes and len(self._frames) > 1)
        ):
            old = self._frames.popleft()
            self._bytes -= old.nbytes
            self.stats.evicted += 1
