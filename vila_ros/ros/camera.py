"""One camera as the node sees it: its settings, frame buffer, subscription, last frame and stale alert, in one object.

`ingest` is the image callback's work: decide from the header stamp whether the frame is wanted (most are not: a
30 fps camera feeds a 4 fps clip), and only then decode, shrink and buffer it. `ingest_serialized` does the same
from a raw subscription's CDR bytes (`cdr.py`): the stamp is read from the first bytes, and only a kept frame is
parsed further. No rclpy in here beyond the messages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from sensor_msgs.msg import CompressedImage

from vila_ros.ros import cdr
from vila_ros.ros.conversion import (
    MAX_STAMP_NS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    shrink,
    stamp_to_ns,
)
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.parameters import CameraSpec
from vila_ros.tasks import NANOSECONDS


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
        """Decide, decode and buffer one image message; `clock_ns` stamps images that carry no stamp. A stamp
        outside ROS time, or (`max_future_ns` > 0) further ahead of the node's clock than that, drops the frame:
        one such frame would otherwise reset the buffer's grid and poison every window after it."""
        self.last_frame_s = time.monotonic()
        stamp_ns, warning, key, dropped = self._stamp(stamp_to_ns(msg.header.stamp), clock_ns, max_future_ns)
        if dropped is not None:
            return dropped
        if not self.buffer.wants(stamp_ns):
            return Ingested("skipped", stamp_ns, warning, key)
        return self._keep(msg, stamp_ns, max_side, warning, key)

    def ingest_serialized(self, data: bytes, clock_ns: Callable[[], int], max_side: int,
                          max_future_ns: int = 0) -> Ingested:
        """`ingest` for a serialized Image or CompressedImage (`spec.compressed` says which): a skipped frame costs
        a read of its stamp; malformed bytes are a bad frame like an undecodable image."""
        self.last_frame_s = time.monotonic()
        try:
            raw_stamp = cdr.read_stamp_ns(data)
        except ImageDecodeError as error:
            return self._bad(str(error), clock_ns(), received=True)
        stamp_ns, warning, key, dropped = self._stamp(raw_stamp, clock_ns, max_future_ns)
        if dropped is not None:
            return dropped
        if not self.buffer.wants(stamp_ns):
            return Ingested("skipped", stamp_ns, warning, key)
        try:
            msg = cdr.read_compressed_image(data) if self.spec.compressed else cdr.read_image(data)
        except ImageDecodeError as error:
            return self._bad(str(error), stamp_ns)
        return self._keep(msg, stamp_ns, max_side, warning, key)

    def _stamp(self, stamp_ns: int, clock_ns: Callable[[], int],
               max_future_ns: int) -> tuple[int, str, str, Ingested | None]:
        """(stamp, warning, warning key, the outcome of a dropped frame or None). A nanosec of a second or more is
        carried into sec, as everywhere downstream (messages, answers, the event log all derive from this ns)."""
        if not 0 <= stamp_ns <= MAX_STAMP_NS:
            text = f"header.stamp ({stamp_ns} ns) is outside ROS time (0 .. {MAX_STAMP_NS} ns)"
            return self._drop(text, "bad_stamps", "stamp")
        now_ns = clock_ns() if stamp_ns == 0 or max_future_ns > 0 else 0
        if stamp_ns == 0:  # some drivers leave stamps empty: fall back to receipt time, and say so
            return now_ns, f"camera {self.name}: images have no header stamp; using receipt time", "stamp", None
        # now_ns 0: simulated time before the first /clock message, when every stamp would be "ahead".
        if max_future_ns > 0 and now_ns > 0 and stamp_ns - now_ns > max_future_ns:
            text = (f"header.stamp is {(stamp_ns - now_ns) / NANOSECONDS:.1f} s ahead of the node's clock "
                    f"(stamp_max_future_s: {max_future_ns / NANOSECONDS:g} s)")
            return self._drop(text, "future_stamps", "future")
        return stamp_ns, "", "", None

    def _drop(self, text: str, counter: str, key: str) -> tuple[int, str, str, Ingested]:
        self.buffer.record_error(text, received=True, counter=counter)
        return 0, "", "", Ingested("error", 0, f"camera {self.name}: dropped a frame: {text}", key)

    def _bad(self, error: str, stamp_ns: int, received: bool = False) -> Ingested:
        self.buffer.record_error(error, received)
        return Ingested("error", stamp_ns, f"camera {self.name}: dropped a frame: {error}", "decode")

    def _keep(self, msg: Any, stamp_ns: int, max_side: int, warning: str, key: str) -> Ingested:
        try:
            compressed = isinstance(msg, (CompressedImage, cdr.RawCompressedImage))
            rgb = (shrink(compressed_to_rgb(msg, min_long_side=max_side or None), max_side)
                   if compressed else image_to_rgb(msg, max_side))
        except ImageDecodeError as error:
            return self._bad(str(error), stamp_ns)
        self.buffer.add(Frame(self.name, stamp_ns, msg.header.frame_id, rgb))
        self.frame_id = msg.header.frame_id
        return Ingested("kept", stamp_ns, warning, key)
