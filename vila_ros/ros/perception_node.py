"""The perception node: cameras in; descriptions, corner-case alerts, scene queries and diagnostics out.

A lifecycle node (configure: load the model, create outputs; activate: subscribe, start the inference worker and
the ingest thread; deactivate: stop them and END every open alert; cleanup: free the model and the buffers), that
under `main` drives itself to active (`autostart`), so it runs with or without a lifecycle manager. Image callbacks
only decide, decode and buffer (`camera.py`) on the node's own ingest thread (`ingest.py`); all model work happens
on the worker thread (`worker.py`), whose alerts come complete from the tracker (`events.py`); silent cameras are
watched on a timer of their own (`stale.py`); /diagnostics is assembled in `diagnostics.py`. The query services
exist from construction to shutdown and wait for the worker in their own callback group, so a slow answer never
stalls anything else.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from vila_ros.msg import CornerCaseAlert
from vila_ros.ros import diagnostics, parameters, restart
from vila_ros.ros.ask_action import AskSceneAction
from vila_ros.ros.camera import Camera
from vila_ros.ros.events import AlertIds, AlertUpdate, EventTracker
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.guard import Throttled, guarded, guarded_transition
from vila_ros.ros.history import History
from vila_ros.ros.ingest import IngestExecutor
from vila_ros.ros.node_stats import NodeStats, TimedEngine
from vila_ros.ros.outputs import (
    STATE_NAMES,
    EventLog,
    Overlay,
    alert_message,
    alert_record,
    create_publishers,
    description_message,
)
from vila_ros.ros.query_service import EventQueryService, SceneQueryService, create_services
from vila_ros.ros.stale import StaleMonitor
from vila_ros.ros.worker import Description, InferenceWorker
from vila_ros.tasks import NANOSECONDS

GIL_SWITCH_INTERVAL_S = 0.001
log = logging.getLogger("vila_ros.perception_node")


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = "vila_perception", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        parameters.declare_parameters(self)
        self.engine: TimedEngine | None = None
        self.worker: InferenceWorker | None = None
        self.cameras: dict[str, Camera] = {}
        self.history = History(parameters.value(self, "history_size"))
        self.node_stats: NodeStats | None = None
        self.event_log: EventLog | None = None
        self.overlay = Overlay()
        self.alert_ids = AlertIds()  # one counter for every alert source; continued from the event log
        self._restart_ends: list[AlertUpdate] = []  # ENDs of alerts a previous run left open, sent at activate
        self.stale = StaleMonitor(parameters.value(self, "stale_after_s"), self.alert_ids)
        self.ingest = IngestExecutor(self)
        self._outputs: dict[str, object] = {}
        self._stale_timer = None
        self._alert_lock = threading.Lock()  # the stale timer against lifecycle transitions
        self.configure_error = ""
        # Set by `main` on SIGINT/SIGTERM: from then on nothing is sent (open alerts are ENDed by the next run, from
        # the event log), as when a signal has shut the ROS context down under another owner's spin.
        self.ending = False
        self._frame_max_side = parameters.value(self, "frame_max_side")  # read-only: read once, not per frame
        self._max_future_ns = int(parameters.value(self, "stamp_max_future_s") * NANOSECONDS)
        log_error = self.get_logger().error
        self._warn_throttled = Throttled(self.get_logger().warning)  # per-camera warnings, at most every 5 s
        # Diagnostics live as long as the node: an operator must see why a configure failed.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(parameters.value(self, "diagnostics_period_s"),
                                                    guarded("diagnostics", self._publish_diagnostics,
                                                            log_error=log_error))
        self._on_query_scene = SceneQueryService(lambda: self.worker, lambda name: parameters.value(self, name),
                                                 self._unconfigured_reason, log_error)
        events = EventQueryService(self.history, self._now_ns)
        group = ReentrantCallbackGroup()  # a waiting query or goal never blocks the rest
        self._query_services = create_services(self, self._on_query_scene, events,
                                               parameters.value(self, "service_qos_depth"), log_error, group)
        self._ask_scene = AskSceneAction(self, lambda: self.worker, lambda name: parameters.value(self, name),
                                         self._unconfigured_reason, group)
        self.add_on_set_parameters_callback(guarded(
            "parameters", self._validate_parameter_change, log_error=log_error,
            on_error=lambda text: SetParametersResult(successful=False, reason=text)))

    @property
    def buffers(self) -> dict[str, CameraBuffer]:
        return {name: camera.buffer for name, camera in self.cameras.items()}

    @property
    def stale_watched(self) -> bool:
        return self._stale_timer is not None

    def destroy_node(self) -> None:
        self._stop_all("the perception node was destroyed")
        self.ingest.destroy()
        # Before the node's own teardown: destroying an action server together with its node races the handles it
        # shares with the node (a known rcl_action hazard at shutdown).
        if self._ask_scene.server in self.waitables:
            self._ask_scene.server.destroy()
        super().destroy_node()

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """What the parameter services call: rclpy's own refusals (type, read-only) explained."""
        result = super().set_parameters_atomically(parameter_list)
        if not result.successful:
            result.reason = parameters.explain_refusal(self, parameter_list, result.reason)
        return result

    # ------------------------------------------------------------------------------------------- lifecycle
    @guarded_transition("configure")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            specs = parameters.camera_specs(self)
            # A TimedEngine: its model clock splits latency into model and node time.
            self.engine = TimedEngine(parameters.load_engine(self))
            settings = parameters.worker_settings(self, self.engine.num_video_frames, engine=self.engine)
            tracker = EventTracker(parameters.tracker_settings(self), self.alert_ids)
        except Exception as error:  # noqa: BLE001 - report any configuration failure as a failed transition
            # CheckpointError messages name the file at fault; the type says what kind of fault it is.
            self.configure_error = f"{type(error).__name__}: {error}"
            self.get_logger().error(f"configuration failed: {self.configure_error}")
            self.engine = None
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        alerts = "each category's probability" if settings.alert_thresholds else "the generated answer"
        descriptions = "the describe_regex_file grammar" if settings.describe_regex else "free text"
        self.get_logger().info(f"alerts decide on {alerts}; descriptions: {descriptions}")
        max_bytes = int(parameters.value(self, "buffer_max_megabytes") * 1024 * 1024)
        self.cameras = {spec.name: Camera(spec, CameraBuffer(
            spec.name, 1.0 / spec.clip_fps, parameters.value(self, "buffer_seconds"),
            parameters.value(self, "buffer_max_frames"), max_bytes)) for spec in specs}
        self.node_stats = NodeStats(self.cameras, self.engine.model_seconds)
        self.worker = InferenceWorker(self.engine, self.buffers, settings, self._publish_description,
                                      self._publish_alert, tracker)
        self._outputs = create_publishers(self, lambda name: parameters.value(self, name))
        log_path = parameters.resolve_log_path(parameters.value(self, "event_log_path"))
        self._restart_ends = restart.resume(self.alert_ids, log_path, self._now_ns(), self.get_logger().warning)
        self.event_log = EventLog(log_path)
        if not parameters.value(self, "model_dir"):
            self.get_logger().warning(diagnostics.EMBEDDED_MODEL_NOTE)
        self.get_logger().info(f"configured: model {self.engine.model_id}, cameras "
                               + ", ".join(f"{c.name} <- {c.topic}" for c in specs))
        return TransitionCallbackReturn.SUCCESS

    @guarded_transition("activate")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # Sensor-data QoS (best effort, shallow): a late frame is worthless, and cameras publish best effort.
        image_qos = QoSProfile(depth=parameters.value(self, "image_qos_depth"),
                               reliability=QoSReliabilityPolicy.BEST_EFFORT,
                               durability=QoSDurabilityPolicy.VOLATILE, history=QoSHistoryPolicy.KEEP_LAST)
        for camera in self.cameras.values():
            camera.subscription = self.ingest.subscribe(
                CompressedImage if camera.spec.compressed else Image, camera.spec.topic,
                guarded("image", lambda msg, name=camera.name: self._on_image(name, msg),
                        log_error=self.get_logger().error), image_qos, raw=True)
        self.stale.start(time.monotonic())
        if self.stale.enabled:  # wall time, whatever clock the node runs on (a paused /clock must not hide it)
            self._stale_timer = self.create_timer(self.stale.check_period_s, guarded("stale", self._check_stale),
                                                  clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.worker.start()
        self.ingest.start()
        self.get_logger().info("active")
        result = super().on_activate(state)  # the publishers are active from here
        ends, self._restart_ends = self._restart_ends, []
        for update in ends:
            self._publish_alert(update)
        return result

    @guarded_transition("deactivate")
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._end_alerts("the perception node was deactivated")  # while the publishers are still active
        return super().on_deactivate(state)

    @guarded_transition("cleanup")
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    @guarded_transition("error")
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After a transition failed unexpectedly: back to unconfigured, every alert ENDed, nothing half-running."""
        self._stop_all("the perception node stopped after an internal error")
        return TransitionCallbackReturn.SUCCESS

    @guarded_transition("shutdown")
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_all("the perception node shut down")
        return TransitionCallbackReturn.SUCCESS

    def _stop_all(self, reason: str) -> None:
        self._stop_processing()
        self._end_alerts(reason)
        self._release()

    def _stop_processing(self) -> None:
        """No more frames, checks or model work; buffers and alerts stay."""
        with self._alert_lock:
            if self._stale_timer is not None:
                self.destroy_timer(self._stale_timer)
                self._stale_timer = None
        self.ingest.stop()
        for camera in self.cameras.values():
            if camera.subscription is not None:
                self.ingest.unsubscribe(camera.subscription)
                camera.subscription = None
        if self.worker is not None:
            self.worker.stop()

    def _end_alerts(self, reason: str) -> None:
        """END every open alert (corner cases and stale cameras): nobody watches them any more."""
        with self._alert_lock:
            updates = self.worker.tracker.end_all(reason) if self.worker is not None else []
            updates += self.stale.end_all(self.cameras.values(), reason, self._now_ns)
        for update in updates:
            self._publish_alert(update)
        self.overlay.clear()

    def _release(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self.event_log is not None:
            self.event_log.close()
        self.worker = self.engine = self.node_stats = None
        self.cameras = {}
        self.overlay.clear()

    def _validate_parameter_change(self, changed: list[Parameter]) -> SetParametersResult:
        """Prompts, periods and alert rules change live; a bad value is refused with the reason."""
        reason = parameters.apply_change(self, self.worker, self.engine, changed)
        return SetParametersResult(successful=not reason, reason=reason)

    # ---------------------------------------------------------------------------------------------- inputs
    def _on_image(self, name: str, msg: bytes | Image | CompressedImage) -> None:
        camera, worker, stats = self.cameras.get(name), self.worker, self.node_stats  # a cleanup may clear them
        if camera is None or worker is None:
            return
        token = stats.begin_callback() if stats is not None else None
        # Serialized (raw subscription): a skipped frame is never deserialized (`cdr.py`).
        ingest = camera.ingest_serialized if isinstance(msg, bytes) else camera.ingest
        result = ingest(msg, self._now_ns, self._frame_max_side, self._max_future_ns)
        if result.warning:
            self._warn_throttled(f"{name}-{result.warning_key}", result.warning)
        if result.outcome == "kept":
            worker.notify()
        if token is not None:
            # Against the node's clock: publish-to-processed latency for cameras that stamp at capture.
            age_ns = self._now_ns() - result.stamp_ns if result.outcome != "error" else 0
            stats.end_callback(token, name, result.outcome, result.stamp_ns, age_ns)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # --------------------------------------------------------------------------------------------- outputs
    def _publish_description(self, description: Description) -> None:
        if not self._can_send():
            return
        msg = description_message(description, self.engine.model_id)
        newest = description.frames[-1]
        self.history.add("descriptions", newest.stamp_ns, description.text, msg)
        self._publish("description", msg)
        if self.node_stats is not None:
            timings = description.timings
            self.node_stats.record_description(description.camera, newest.stamp_ns,
                                               timings.vision_ms + timings.prefill_ms + timings.decode_ms)
        self._publish("description_text", String(data=description.text))
        self.overlay.describe(description.camera, description.text)
        self._publish_annotated(newest)

    def _publish_alert(self, update: AlertUpdate) -> None:
        msg = alert_message(update)
        state = STATE_NAMES[msg.state]
        if not self._can_send():  # not even to /rosout
            log.warning("alert %s %s (%s) on %s not published: the node is ending after a signal", state,
                        msg.alert_id, msg.category, msg.camera)
            return
        self.history.add("alerts", update.stamp_ns, f"{update.category} {msg.text}", msg)
        self._publish("alert", msg)
        if self.event_log is not None:
            self.event_log.append(alert_record(msg))
        self.overlay.alert(msg)
        level = self.get_logger().warning if msg.severity >= CornerCaseAlert.WARNING else self.get_logger().info
        level(f"alert {state} {msg.alert_id} ({msg.category}) on {msg.camera}")
        camera = self.cameras.get(update.camera)
        frames = camera.buffer.window(max_frames=1) if camera is not None else []
        if frames:
            self._publish_annotated(frames[-1])

    def _can_send(self) -> bool:
        return self.context.ok() and not self.ending

    def _publish(self, key: str, msg) -> None:
        publisher = self._outputs.get(key)
        if publisher is None:
            return
        try:
            publisher.publish(msg)
        except Exception:  # a signal shut the context down meanwhile: not the job's failure
            if self.context.ok():
                raise

    def _publish_annotated(self, frame: Frame) -> None:
        publisher = self._outputs.get("annotated")
        if publisher is None or publisher.get_subscription_count() == 0:
            return  # drawing costs milliseconds: only for someone watching
        publisher.publish(self.overlay.draw(frame))

    def _check_stale(self) -> None:
        with self._alert_lock:
            if self._stale_timer is None:
                return  # stopped meanwhile
            updates = self.stale.check(self.cameras.values(), time.monotonic(), self._now_ns)
        for update in updates:
            self._publish_alert(update)

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray(status=diagnostics.statuses(diagnostics.node_view(self)))
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # -------------------------------------------------------------------------------------------- services
    def _unconfigured_reason(self) -> str:
        reason = "the perception node is not configured"
        return f"{reason}: configuration failed: {self.configure_error}" if self.configure_error else reason


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # Convenience for machines without `ros2 launch`: `perception_node --params-file config/perception.yaml`.
    if "--params-file" in argv and "--ros-args" not in argv:
        index = argv.index("--params-file")
        argv[index:index] = ["--ros-args"]
    # The ingest thread, the inference worker and the service threads hand the GIL to each other all the time; a
    # thread that wants it back (a woken worker, a camera callback behind a decode step) would otherwise wait out up
    # to CPython's default 5 ms switch interval while another runs Python.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # Signals are ours, not rclpy's: its handler shuts the context down under every thread at once (ingest, worker,
    # executor, action server), and a thread still inside a wait on that context crashed the process now and then.
    # Here a signal only ends the spin; everything then stops in order, with the context alive until the last step.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    signalled = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: signalled.set())
    node = PerceptionNode()
    # Threads: timers and lifecycle and parameter services, plus up to query_max_waiting blocked queries.
    executor = MultiThreadedExecutor(num_threads=3 + parameters.value(node, "query_max_waiting"))
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor,), name="vila_ros_executor")
    try:
        if parameters.value(node, "autostart") and not signalled.is_set():
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("could not configure; waiting for a lifecycle manager")
            else:
                node.trigger_activate()
        spinner.start()
        while spinner.is_alive() and not signalled.wait(0.5):
            pass
    finally:
        node.ending = signalled.is_set()
        node._stop_processing()  # answers waiting queries, so the executor's threads can finish
        executor.shutdown()
        if spinner.is_alive():
            spinner.join()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin(executor: MultiThreadedExecutor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:  # someone else shut the context down: end as after a signal
        pass


if __name__ == "__main__":
    sys.exit(main())
