"""Cameras that stop sending: a `sensor_stale` alert BEGINs when a camera has been silent longer than the limit and
ENDs when its frames come back.

Silence is wall time (monotonic), measured from activation until a camera's first message: a replayed bag or a
paused /clock must not make a live camera look silent, nor a silent one look alive. The node checks on a timer of
its own (`check_period_s`), so how often diagnostics are published does not change when a camera is called stale.
Ids come from the same scheme as the corner-case alerts (`events.AlertIds`). No rclpy in here.
"""
from __future__ import annotations

from typing import Callable, Iterable

from vila_ros import tasks
from vila_ros.ros.camera import Camera
from vila_ros.ros.events import BEGIN, END, AlertIds, AlertUpdate

STALE_CATEGORY = "sensor_stale"
STALE_SEVERITY = tasks.WARNING


class StaleMonitor:
    def __init__(self, limit_s: float, ids: AlertIds | None = None) -> None:
        """`limit_s`: seconds of silence after which a camera is stale; 0 turns the monitor off. `ids`: shared with
        the node's other alert sources."""
        if limit_s < 0:
            raise ValueError(f"the stale limit must be at least 0 s: {limit_s}")
        self.limit_s = limit_s
        self.since = 0.0  # monotonic time from which silence counts for a camera that never sent a frame
        self._ids = ids or AlertIds()

    @property
    def enabled(self) -> bool:
        return self.limit_s > 0

    @property
    def check_period_s(self) -> float:
        """How often to check: a tenth of the limit (so a stale camera is called within 10 % of it), 50 ms .. 1 s."""
        return min(1.0, max(0.05, self.limit_s / 10))

    def start(self, now: float) -> None:
        self.since = now

    def check(self, cameras: Iterable[Camera], now: float, clock_ns: Callable[[], int]) -> list[AlertUpdate]:
        """BEGIN or END each camera's stale alert as its silence crosses the limit; `clock_ns` stamps an alert of
        a camera that never kept a frame."""
        if not self.enabled:
            return []
        updates = []
        for camera in cameras:
            seconds = camera.silent_s(now, self.since)
            stale = seconds > self.limit_s
            if stale == (camera.stale_alert_id is not None):
                continue
            if stale:
                camera.stale_alert_id = self._ids.new(camera.name, STALE_CATEGORY)
                updates.append(self._alert(camera, BEGIN, f"no frames from camera {camera.name} for {seconds:.1f} s",
                                           clock_ns))
            else:
                updates.append(self._alert(camera, END, f"camera {camera.name} is sending frames again", clock_ns))
                camera.stale_alert_id = None
        return updates

    def end_all(self, cameras: Iterable[Camera], text: str, clock_ns: Callable[[], int]) -> list[AlertUpdate]:
        """END the stale alert of every camera that has one (the node stops watching)."""
        updates = []
        for camera in cameras:
            if camera.stale_alert_id is not None:
                updates.append(self._alert(camera, END, text, clock_ns))
                camera.stale_alert_id = None
        return updates

    @staticmethod
    def _alert(camera: Camera, state: int, text: str, clock_ns: Callable[[], int]) -> AlertUpdate:
        # Stamped with the newest buffered frame: the alert belongs to the camera's timeline, also in a replay.
        newest = camera.buffer.newest_stamp_ns()
        stamp_ns = newest if newest is not None else clock_ns()
        return AlertUpdate(camera.stale_alert_id or "", camera.name, STALE_CATEGORY, state, stamp_ns, 1.0,
                           () if newest is None else (newest,), text, STALE_SEVERITY, camera.frame_id)
