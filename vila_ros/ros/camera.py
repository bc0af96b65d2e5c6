"""One camera as the node sees it: its settings, frame buffer, subscription, last frame and stale alert, in one object.

`ingest` is the image callback's work: decide from the header stamp whether the frame is wanted (most are not: a
30 fps camera feeds a 4 fps clip), and only then decode, shrink and buffer it. No rclpy in here beyond the messages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from sensor_msgs.msg import CompressedImage

from vila_ros.ros.conversion import (
    ImageDecodeError,
    StampError,
    checked_stamp_ns,
    compressed_to_rgb,
    image_to_rgb,
    shrink,
)
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.parameters import CameraSpec


@dataclass(frozen=True)
class Ingested:
    outcome: str  # kept, skipped or error
    stamp_ns: int
    warning: str = ""  # for the log (throttled), keyed by `warning_key`
    warning_key: str = ""


class Camera:
    def __init__(self, spec: CameraSpec, buffer: CameraBuffer) -> None:
        self.spec = spec
        self.buffer = buffer
        self.frame_id = ""  # of the newest kept frame
        self.subscription: Any = None  # on the ingest node, while active
        self.last_frame_s: float | None = None  # time.monotonic() of the newest message, kept or not
        self.stale_alert_id: str | None = None  # the sensor_stale alert open while the camera is silent

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def clip_fps(self) -> float:
        return self.spec.clip_fps

    def silent_s(self, now: float, since: float) -> float:
        """Seconds without a message at `now` (monotonic), counted from `since` (activation) at the earliest: a
        camera is not silent while nobody listened."""
        return now - max(since, self.last_frame_s if self.last_frame_s is not None else since)

    def ingest(self, msg: Any, clock_ns: Callable[[], int], max_side: int, max_future_ns: int = 0) -> Ingested:
        """Decide, decode and buffer one image message; `clock_ns` stamps images that carry no stamp. A stamp that
        is not a valid ROS time, or (`max_future_ns` > 0) further ahead of the node's clock than that, drops the
        frame: one such frame would otherwise reset the buffer's grid and poison every window after it."""
        self.last_frame_s = time.monotonic()
        buffer = self.buffer
        warning = key = ""
        try:
            stamp_ns = checked_stamp_ns(msg.header.stamp, "header.stamp")
        except StampError as error:
            buffer.record_error(str(error), "bad_stamps", received=True)
            return Ingested("error", 0, f"camera {self.name}: dropped a frame: {error}", "stamp")
        now_ns = clock_ns() if stamp_ns == 0 or max_future_ns > 0 else 0
        if stamp_ns == 0:  # some drivers leave stamps empty: fall back to receipt time, and say so
            stamp_ns = now_ns
            warning, key = f"camera {self.name}: images have no header stamp; using receipt time", "stamp"
        elif max_future_ns > 0 and now_ns > 0 and stamp_ns - now_ns > max_future_ns:
            # now_ns 0: simulated time before the first /clock message, when every stamp is "ahead".
            ahead = (stamp_ns - now_ns) / 1e9
            text = (f"header.stamp is {ahead:.1f} s ahead of the node's clock (stamp_max_future_s: "
                    f"{max_future_ns / 1e9:g} s)")
            buffer.record_error(text, "future_stamps", received=True)
            return Ingested("error", stamp_ns, f"camera {self.name}: dropped a frame: {text}", "future")
        if not buffer.wants(stamp_ns):
            return Ingested("skipped", stamp_ns, warning, key)
        try:
            rgb = (shrink(compressed_to_rgb(msg, min_long_side=max_side or None), max_side)
                   if isinstance(msg, CompressedImage) else image_to_rgb(msg, max_side))
        except ImageDecodeError as error:
            buffer.record_error(str(error))
            return Ingested("error", stamp_ns, f"camera {self.name}: dropped a frame: {error}", "decode")
        buffer.add(Frame(self.name, stamp_ns, msg.header.frame_id, rgb))
        self.frame_id = msg.header.frame_id
        return Ingested("kept", stamp_ns, warning, key)
