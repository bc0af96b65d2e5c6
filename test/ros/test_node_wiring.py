"""The perception node in this process, on real rclpy (a context of its own, no discovery beyond it), spun by the
test's own executor as a user or a component container would: frames arrive, stale cameras are called on their own
timer, and every alert still open when the node stops watching gets its END."""
import re
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from vila_ros.msg import CornerCaseAlert
from vila_ros.ros.conversion import rgb_to_image
from vila_ros.ros.perception_node import PerceptionNode

S = 1_000_000_000
BEGIN, END = CornerCaseAlert.BEGIN, CornerCaseAlert.END


@pytest.fixture
def context(monkeypatch):
    # One participant for all nodes of the test: they match without any discovery, and see no other process.
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


class Rig:
    """A perception node spun by `executor_type` on a thread of the test, a camera publisher, an alert listener."""

    def __init__(self, context, executor_type, parameters: dict):
        overrides = [Parameter(name, value=value) for name, value in
                     {"event_log_path": "", "annotated_image_topic": "", "autostart": False, **parameters}.items()]
        self.node = PerceptionNode("wired_perception", context=context, parameter_overrides=overrides)
        self.helper = rclpy.create_node("wired_helper", context=context)
        self.alerts: list[CornerCaseAlert] = []
        latched = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.helper.create_subscription(CornerCaseAlert, "/wired_perception/alerts", self.alerts.append, latched)
        self.cameras = {}
        self.executor = executor_type(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.helper)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def publish(self, topic: str, stamp_ns: int, rgb=None):
        if topic not in self.cameras:
            self.cameras[topic] = self.helper.create_publisher(Image, topic, 10)
        rgb = np.zeros((120, 160, 3), np.uint8) if rgb is None else rgb
        self.cameras[topic].publish(rgb_to_image(rgb, stamp_ns, "cam_frame"))

    def feed_until(self, topic: str, predicate, timeout: float, start_ns: int = 1_700_000_000 * S) -> bool:
        """Publish frames 0.1 s of camera time apart until `predicate()` holds."""
        deadline, k = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            self.publish(topic, start_ns + k * S // 10)
            k += 1
            time.sleep(0.05)
            if predicate():
                return True
        return predicate()

    def alerts_where(self, **fields):
        return [a for a in self.alerts if all(getattr(a, k) == v for k, v in fields.items())]

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.helper.destroy_node()


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("executor_type", [SingleThreadedExecutor, MultiThreadedExecutor])
def test_frames_arrive_when_someone_else_spins_the_node(context, tiny_dir, executor_type):
    rig = Rig(context, executor_type, {"model_dir": str(tiny_dir), "camera_topics": ["/wired/front/image_raw"],
                                       "stale_after_s": 0.0, "describe_period_s": 0.0, "alert_period_s": 0.0})
    try:
        assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        buffer = rig.node.cameras["front"].buffer
        assert rig.feed_until("/wired/front/image_raw", lambda: buffer.stats.kept >= 3, 20), buffer.stats
        assert rig.node.cameras["front"].frame_id == "cam_frame"
        # Deactivated, the node stops its ingest thread: frames are no longer received (and the buffer stays).
        assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not rig.node.ingest.running
        received = buffer.stats.received
        rig.publish("/wired/front/image_raw", 1_750_000_000 * S)
        time.sleep(0.5)
        assert buffer.stats.received == received and len(buffer) >= 3
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert rig.feed_until("/wired/front/image_raw", lambda: buffer.stats.received > received + 2, 20,
                              start_ns=1_750_000_000 * S)
    finally:
        rig.close()


def test_stale_timing_does_not_follow_the_diagnostics_period(context, tiny_dir):
    rig = Rig(context, SingleThreadedExecutor, {
        "model_dir": str(tiny_dir), "camera_topics": ["/wired/silent/image_raw"], "stale_after_s": 0.5,
        "diagnostics_period_s": 60.0, "describe_period_s": 0.0, "alert_period_s": 0.0})
    try:
        assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        activated = time.monotonic()
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: rig.alerts_where(category="sensor_stale", state=BEGIN), 10)
        # Called within a check period (a tenth of the limit) of the limit, not at the next /diagnostics a minute on.
        assert time.monotonic() - activated < 5.0
        begin = rig.alerts_where(category="sensor_stale", state=BEGIN)[0]
        assert (begin.camera, begin.severity) == ("front", CornerCaseAlert.WARNING)
        # No event log to continue from: the id carries this run's id (unique across restarts), then the count.
        assert re.fullmatch(r"front/sensor_stale/[0-9a-z]+-1", begin.alert_id), begin.alert_id
        # A frame brings the camera back: END under the same id.
        assert rig.feed_until("/wired/silent/image_raw",
                              lambda: rig.alerts_where(category="sensor_stale", state=END), 10)
        assert rig.alerts_where(category="sensor_stale", state=END)[0].alert_id == begin.alert_id
    finally:
        rig.close()


def test_open_alerts_end_when_the_node_stops_watching(context):
    """The embedded default model calls a black camera blocked, also when a user's rule asks ("Is the camera
    blocked?" -> yes, an alert at the rule's severity); a second camera never sends and goes stale. Deactivation
    ENDs them all; so does a shutdown from active, which also frees the buffers and clears the annotated-image
    overlay."""
    rig = Rig(context, MultiThreadedExecutor, {
        "camera_names": ["front", "rear"], "camera_topics": ["/wired/front/image_raw", "/wired/rear/image_raw"],
        "num_frames": 4, "describe_period_s": 0.0, "alert_period_s": 0.5, "stale_after_s": 1.0,
        "alert_categories": ["camera_blocked"], "alert_rule_categories": ["looks_covered"],
        "alert_rule_questions": ["Is the camera blocked?"]})
    front = "/wired/front/image_raw"

    def open_alerts():
        state = {}
        for alert in rig.alerts:
            state[alert.alert_id] = alert.state
        return {alert_id for alert_id, s in state.items() if s != END}

    try:
        assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert rig.feed_until(front, lambda: rig.alerts_where(category="camera_blocked", state=BEGIN)
                              and rig.alerts_where(category="sensor_stale", camera="rear", state=BEGIN), 120)
        blocked = rig.alerts_where(category="camera_blocked", state=BEGIN)[0]
        assert blocked.severity == CornerCaseAlert.CRITICAL and blocked.header.frame_id == "cam_frame"
        assert blocked.text and len(blocked.evidence_stamps) == 4
        dark = rig.alerts_where(category="looks_covered", state=BEGIN)
        assert dark and dark[0].severity == CornerCaseAlert.WARNING  # the rule's (parameters give rules WARNING)
        assert rig.node.overlay.alerts
        opened = open_alerts()
        assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: not open_alerts(), 10), (opened, open_alerts())
        ended = {a.alert_id for a in rig.alerts if a.state == END}
        assert opened <= ended
        assert not rig.node.overlay.alerts and not rig.node.overlay.description
        # Active again, the same black frames raise new alerts (new ids); a shutdown from active ENDs them too.
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert rig.feed_until(front, lambda: len(rig.alerts_where(category="camera_blocked", state=BEGIN)) == 2, 120,
                              start_ns=1_750_000_000 * S)
        assert open_alerts()
        assert rig.node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: not open_alerts(), 10), open_alerts()
        assert rig.node.cameras == {} and rig.node.worker is None and not rig.node.overlay.alerts
    finally:
        rig.close()


def test_tracker_settings_change_live_as_one_validated_object(context, tiny_dir):
    node = PerceptionNode("wired_settings", context=context, parameter_overrides=[
        Parameter("model_dir", value=str(tiny_dir)), Parameter("event_log_path", value=""),
        Parameter("autostart", value=False)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        tracker = node.worker.tracker
        assert (tracker.settings.confirm, tracker.settings.clear) == (1, 2)
        [result] = node.set_parameters([Parameter("alert_confirm", value=3)])
        assert result.successful
        assert (tracker.settings.confirm, tracker.settings.clear) == (3, 2)
        [result] = node.set_parameters([Parameter("alert_cooldown_s", value=-1.0)])  # out of the declared range
        assert not result.successful and tracker.settings.cooldown_s == 0.0
    finally:
        node.destroy_node()


def _spin_until_shutdown(node) -> None:
    try:
        rclpy.spin(node)
    except ExternalShutdownException:  # how rclpy.spin ends when the context shuts down under it
        pass


def test_frames_arrive_under_a_plain_rclpy_spin(monkeypatch, tiny_dir):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")
    rclpy.init()  # the default context, which `rclpy.spin(node)` and its global executor use
    spinner = None
    try:
        node = PerceptionNode("spun_perception", parameter_overrides=[
            Parameter("model_dir", value=str(tiny_dir)), Parameter("camera_topics", value=["/spun/front/image_raw"]),
            Parameter("event_log_path", value=""), Parameter("stale_after_s", value=0.0),
            Parameter("describe_period_s", value=0.0), Parameter("alert_period_s", value=0.0)])
        helper = rclpy.create_node("spun_helper")
        publisher = helper.create_publisher(Image, "/spun/front/image_raw", 10)
        spinner = threading.Thread(target=_spin_until_shutdown, args=(node,), daemon=True)
        spinner.start()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        buffer = node.cameras["front"].buffer
        deadline, k = time.monotonic() + 20, 0
        while buffer.stats.kept < 3 and time.monotonic() < deadline:
            publisher.publish(rgb_to_image(np.zeros((120, 160, 3), np.uint8), 1_700_000_000 * S + k * S // 10, "f"))
            k += 1
            time.sleep(0.05)
        assert buffer.stats.kept >= 3, buffer.stats
    finally:
        rclpy.try_shutdown()
        if spinner is not None:
            spinner.join(5)
    node.destroy_node()
    helper.destroy_node()
