"""The perception node: cameras in; descriptions, corner-case alerts, scene queries and diagnostics out.

A lifecycle node (configure: load the model, create outputs and services; activate: subscribe and start the
inference worker), that by default drives itself to active (`autostart`), so it runs with or without a lifecycle
manager. Image callbacks only decide, decode and buffer; all model work happens on the worker thread; the query
services wait for the worker in their own callback group, so a slow answer never stalls the cameras.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import cv2  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup  # noqa: E402
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vila_ros import tasks  # noqa: E402
from vila_ros.msg import CornerCaseAlert, SceneDescription  # noqa: E402
from vila_ros.ros import parameters  # noqa: E402
from vila_ros.ros.conversion import (ImageDecodeError, compressed_to_rgb, image_to_rgb, ns_to_stamp,  # noqa: E402
                                     stamp_to_ns)
from vila_ros.ros.events import BEGIN, END, AlertUpdate, EventTracker  # noqa: E402
from vila_ros.ros.frame_buffer import CameraBuffer, Frame  # noqa: E402
from vila_ros.ros.history import History  # noqa: E402
from vila_ros.ros.outputs import (STATE_NAMES, EventLog, alert_message, alert_record, annotate,  # noqa: E402
                                  description_message)
from vila_ros.ros.worker import InferenceWorker, QueryError, SceneQuery  # noqa: E402
from vila_ros.srv import QueryEvents, QueryScene  # noqa: E402

# Outputs are few and each one matters: reliable, with room for a subscriber that is briefly slow.
OUTPUT_QOS = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
STALE_CATEGORY = "sensor_stale"


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = "vila_perception", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        parameters.declare_parameters(self)
        self.engine = None
        self.worker: InferenceWorker | None = None
        self.buffers: dict[str, CameraBuffer] = {}
        self.cameras: list[parameters.CameraSpec] = []
        self.history = History(parameters.value(self, "history_size"))
        self._frame_ids: dict[str, str] = {}
        self._subscriptions_by_camera: dict[str, object] = {}
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._description_pub = self._description_text_pub = self._alert_pub = self._annotated_pub = None
        self._diagnostics_pub = None
        self.event_log: EventLog | None = None
        self._last_description = ""
        self._active_alerts: dict[str, tuple[str, int]] = {}
        self._last_frame_wall: dict[str, float] = {}
        self._stale_alerts: dict[str, str] = {}
        self._stale_counter = 0
        self._activated_wall = time.monotonic()
        self._query_services: list = []
        self._query_lock = threading.Lock()
        self._queries_waiting = 0
        self._diagnostics_timer = None
        self._last_warning: dict[str, float] = {}
        self.add_on_set_parameters_callback(self._validate_parameter_change)

    # ------------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.cameras = parameters.camera_specs(self)
            self.engine = self._load_engine()
            settings = parameters.worker_settings(self, self.engine.num_video_frames)
        except Exception as error:  # noqa: BLE001 - report any configuration failure as a failed transition
            self.get_logger().error(f"configuration failed: {error}")
            self.engine = None
            return TransitionCallbackReturn.FAILURE
        max_bytes = int(parameters.value(self, "buffer_max_megabytes") * 1024 * 1024)
        self.buffers = {
            camera.name: CameraBuffer(camera.name, 1.0 / camera.clip_fps, parameters.value(self, "buffer_seconds"),
                                      parameters.value(self, "buffer_max_frames"), max_bytes)
            for camera in self.cameras}
        self.worker = InferenceWorker(self.engine, self.buffers, settings, self._publish_description,
                                      self._publish_alert, self._make_tracker())
        description_topic = parameters.value(self, "description_topic")
        self._description_pub = self.create_lifecycle_publisher(SceneDescription, description_topic, OUTPUT_QOS)
        self._description_text_pub = self.create_lifecycle_publisher(String, description_topic + "_text", OUTPUT_QOS)
        # Alerts must reach subscribers that join late (a logger, an operator console): transient local.
        alert_qos = QoSProfile(depth=parameters.value(self, "alert_history_depth"),
                               reliability=QoSReliabilityPolicy.RELIABLE,
                               durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self._alert_pub = self.create_lifecycle_publisher(CornerCaseAlert, parameters.value(self, "alert_topic"),
                                                          alert_qos)
        annotated_topic = parameters.value(self, "annotated_image_topic")
        self._annotated_pub = (self.create_lifecycle_publisher(Image, annotated_topic, 5) if annotated_topic
                               else None)
        self.event_log = EventLog(parameters.value(self, "event_log_path"))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._query_services = [
            self.create_service(QueryScene, "~/query_scene", self._on_query_scene, callback_group=self._service_group),
            self.create_service(QueryEvents, "~/query_events", self._on_query_events,
                                callback_group=self._service_group),
        ]
        self._diagnostics_timer = self.create_timer(parameters.value(self, "diagnostics_period_s"),
                                                    self._publish_diagnostics)
        self.get_logger().info(f"configured: model {self.engine.model_id}, cameras "
                               + ", ".join(f"{c.name} <- {c.topic}" for c in self.cameras))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # Sensor-data QoS (best effort, shallow): a late frame is worthless, and cameras publish best effort.
        image_qos = QoSProfile(depth=parameters.value(self, "image_qos_depth"),
                               reliability=QoSReliabilityPolicy.BEST_EFFORT,
                               durability=QoSDurabilityPolicy.VOLATILE, history=QoSHistoryPolicy.KEEP_LAST)
        for camera in self.cameras:
            message_type = CompressedImage if camera.compressed else Image
            self._subscriptions_by_camera[camera.name] = self.create_subscription(
                message_type, camera.topic, lambda msg, name=camera.name: self._on_image(name, msg),
                image_qos, callback_group=self._camera_group)
        self._activated_wall = time.monotonic()
        self.worker.start()
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def _stop_processing(self) -> None:
        for subscription in self._subscriptions_by_camera.values():
            self.destroy_subscription(subscription)
        self._subscriptions_by_camera.clear()
        if self.worker is not None:
            self.worker.stop()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for service in self._query_services:
            self.destroy_service(service)
        self._query_services = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for publisher in (self._description_pub, self._description_text_pub, self._alert_pub, self._annotated_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
        self._description_pub = self._description_text_pub = self._alert_pub = self._annotated_pub = None
        self._diagnostics_pub = None
        if self.event_log is not None:
            self.event_log.close()
        self.worker = None
        self.engine = None
        self.buffers = {}

    def _load_engine(self):
        from vila_ros.engine import create_engine
        from vila_ros.resources import resolve_model_dir

        threads = parameters.value(self, "num_threads")
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        model_dir = resolve_model_dir(parameters.value(self, "model_dir"))
        return create_engine(model_dir, engine=parameters.value(self, "engine"),
                             precision=parameters.value(self, "precision"), device=parameters.value(self, "device"))

    def _make_tracker(self) -> EventTracker:
        return EventTracker(confirm=parameters.value(self, "alert_confirm"), clear=parameters.value(self, "alert_clear"),
                            ongoing_period_s=parameters.value(self, "alert_ongoing_period_s"),
                            cooldown_s=parameters.value(self, "alert_cooldown_s"))

    def _validate_parameter_change(self, changed) -> SetParametersResult:
        """Prompts, periods and alert rules change live; a bad value is refused with the reason."""
        if self.worker is None:
            return SetParametersResult(successful=True)
        overrides = {p.name: p.value for p in changed}
        try:
            settings = parameters.worker_settings(self, self.engine.num_video_frames, overrides)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.worker.settings = settings
        tracker_keys = {"alert_confirm", "alert_clear", "alert_ongoing_period_s", "alert_cooldown_s"}
        if tracker_keys & overrides.keys():
            tracker = self.worker.tracker
            for key in tracker_keys & overrides.keys():
                setattr(tracker, key.removeprefix("alert_"), overrides[key])
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------------------------------------- inputs
    def _on_image(self, camera: str, msg) -> None:
        buffer = self.buffers.get(camera)
        if buffer is None or self.worker is None:
            return
        self._last_frame_wall[camera] = time.monotonic()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:  # some drivers leave stamps empty: fall back to receipt time, and say so once
            stamp_ns = self.get_clock().now().nanoseconds
            self._warn_throttled(f"{camera}-stamp", f"camera {camera}: images have no header stamp; using receipt time")
        if not buffer.wants(stamp_ns):
            return
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageDecodeError as error:
            buffer.record_error(str(error))
            self._warn_throttled(f"{camera}-decode", f"camera {camera}: dropped a frame: {error}")
            return
        buffer.add(Frame(camera, stamp_ns, msg.header.frame_id, self._shrink(rgb)))
        self._frame_ids[camera] = msg.header.frame_id
        self.worker.notify()

    def _shrink(self, rgb):
        max_side = parameters.value(self, "frame_max_side")
        height, width = rgb.shape[:2]
        if max_side <= 0 or max(height, width) <= max_side:
            return rgb
        scale = max_side / max(height, width)
        return cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)

    # --------------------------------------------------------------------------------------------- outputs
    def _publish_description(self, description) -> None:
        msg = description_message(description, self.engine.model_id)
        newest = description.frames[-1]
        self.history.add("descriptions", newest.stamp_ns, description.text, msg)
        self._description_pub.publish(msg)
        self._description_text_pub.publish(String(data=description.text))
        self._last_description = f"[{description.camera}] {description.text}"
        self._publish_annotated(newest)

    def _publish_alert(self, update) -> None:
        known = tasks.CATEGORIES.get(update.category)
        text = update.text or (known.description if known else update.category)
        msg = alert_message(update, self._severity(update.category), self._frame_ids.get(update.camera, ""), text)
        self.history.add("alerts", update.stamp_ns, f"{update.category} {msg.text}", msg)
        self._alert_pub.publish(msg)
        self.event_log.append(alert_record(msg))
        if msg.state == CornerCaseAlert.END:
            self._active_alerts.pop(msg.alert_id, None)
        else:
            self._active_alerts[msg.alert_id] = (f"{msg.camera}/{msg.category}", msg.severity)
        level = self.get_logger().warning if msg.severity >= CornerCaseAlert.WARNING else self.get_logger().info
        state = STATE_NAMES[msg.state]
        level(f"alert {state} {msg.alert_id} ({msg.category}) on {msg.camera}")
        if update.camera in self.buffers:
            frames = self.buffers[update.camera].window(max_frames=1)
            if frames:
                self._publish_annotated(frames[-1])

    def _publish_annotated(self, frame) -> None:
        if self._annotated_pub is None or self._annotated_pub.get_subscription_count() == 0:
            return  # drawing costs milliseconds: only for someone watching
        self._annotated_pub.publish(annotate(frame.rgb, self._last_description,
                                             list(self._active_alerts.values()), frame.stamp_ns, frame.frame_id))

    def _severity(self, category: str) -> int:
        if category in tasks.CATEGORIES:
            return tasks.default_severity(category)
        if category == STALE_CATEGORY:
            return CornerCaseAlert.WARNING
        for rule in self.worker.settings.alert_rules:
            if rule.category == category:
                return rule.severity
        return CornerCaseAlert.WARNING

    def _check_stale(self) -> dict[str, float]:
        """Seconds each camera has been silent; BEGIN/END a sensor_stale alert as cameras stop and come back."""
        limit = parameters.value(self, "stale_after_s")
        if self.worker is None or not self._subscriptions_by_camera or limit <= 0:
            return {}
        now = time.monotonic()
        silent = {camera: now - self._last_frame_wall.get(camera, self._activated_wall) for camera in self.buffers}
        for camera, seconds in silent.items():
            stale = seconds > limit
            if stale == (camera in self._stale_alerts):
                continue
            newest = self.buffers[camera].newest_stamp_ns()
            stamp_ns = newest if newest is not None else self.get_clock().now().nanoseconds
            if stale:
                self._stale_counter += 1
                self._stale_alerts[camera] = f"{camera}/{STALE_CATEGORY}/{self._stale_counter}"
                state, text = BEGIN, f"no frames from camera {camera} for {seconds:.1f} s"
            else:
                state, text = END, f"camera {camera} is sending frames again"
            alert_id = self._stale_alerts[camera] if stale else self._stale_alerts.pop(camera)
            self._publish_alert(AlertUpdate(alert_id, camera, STALE_CATEGORY, state, stamp_ns, 1.0,
                                            () if newest is None else (newest,), text))
        return silent

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        silent = self._check_stale()
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for camera, buffer in self.buffers.items():
            stats = buffer.stats
            status = DiagnosticStatus(name=f"vila_ros: camera {camera}", hardware_id=camera)
            if camera in self._stale_alerts:
                status.level = DiagnosticStatus.WARN
                status.message = f"stale: no frames for {silent.get(camera, 0.0):.1f} s"
            elif stats.kept == 0:
                status.level, status.message = DiagnosticStatus.WARN, "no frames received"
            elif stats.decode_errors:
                status.level, status.message = DiagnosticStatus.WARN, f"decode errors: {stats.last_error}"
            else:
                status.level, status.message = DiagnosticStatus.OK, "receiving"
            status.values = _key_values(received=stats.received, kept=stats.kept, skipped_rate=stats.skipped_rate,
                                        skipped_out_of_order=stats.skipped_out_of_order,
                                        decode_errors=stats.decode_errors, time_resets=stats.time_resets,
                                        buffered_frames=len(buffer), buffered_bytes=buffer.nbytes,
                                        seconds_since_last_frame=round(silent.get(camera, -1.0), 2))
            array.status.append(status)
        if self.worker is not None:
            stats = self.worker.stats
            status = DiagnosticStatus(name="vila_ros: inference", hardware_id=self.engine.model_id)
            failing = stats.failures and stats.last_error
            status.level = DiagnosticStatus.ERROR if failing else DiagnosticStatus.OK
            status.message = f"last failure: {stats.last_error}" if failing else "running"
            status.values = _key_values(model=self.engine.model_id, descriptions=stats.descriptions,
                                        alert_checks=stats.alert_checks, queries=stats.queries,
                                        failures=stats.failures, last_latency_ms=round(stats.last_latency_ms, 1),
                                        busy_seconds=round(stats.busy_s, 2),
                                        event_log_written=self.event_log.written,
                                        event_log_errors=self.event_log.errors)
            if self.event_log.errors and status.level == DiagnosticStatus.OK:
                status.level, status.message = DiagnosticStatus.WARN, f"event log: {self.event_log.last_error}"
            array.status.append(status)
        self._diagnostics_pub.publish(array)

    # -------------------------------------------------------------------------------------------- services
    def _on_query_scene(self, request: QueryScene.Request, response: QueryScene.Response) -> QueryScene.Response:
        started = time.perf_counter()
        if self.worker is None:
            response.success, response.error_message = False, "the perception node is not configured"
            return response
        # Each waiting query holds an executor thread; past the cap, refuse at once so cameras never starve.
        with self._query_lock:
            if self._queries_waiting >= parameters.value(self, "query_max_waiting"):
                response.success = False
                response.error_message = (f"busy: {self._queries_waiting} queries are waiting for the model; "
                                          "retry later")
                response.latency_ms = (time.perf_counter() - started) * 1000.0
                return response
            self._queries_waiting += 1
        query = SceneQuery(request.question, request.camera, request.window_seconds, request.window_frames,
                           request.max_new_tokens)
        future = self.worker.submit_query(query)
        try:
            answer = future.result(timeout=parameters.value(self, "query_timeout_s"))
        except FutureTimeoutError:  # not the builtin TimeoutError before Python 3.11
            future.cancel()
            response.success, response.error_message = False, "timed out waiting for the model"
        except QueryError as error:
            response.success, response.error_message = False, str(error)
        except Exception as error:  # noqa: BLE001 - a failed inference is an answer, not a crash
            response.success, response.error_message = False, f"inference failed: {type(error).__name__}: {error}"
        else:
            response.success = True
            response.answer = answer.answer
            response.frame_stamps = [ns_to_stamp(f.stamp_ns) for f in answer.frames]
            response.frame_cameras = [f.camera for f in answer.frames]
        finally:
            with self._query_lock:
                self._queries_waiting -= 1
        response.latency_ms = (time.perf_counter() - started) * 1000.0
        return response

    def _on_query_events(self, request: QueryEvents.Request, response: QueryEvents.Response) -> QueryEvents.Response:
        try:
            found = self.history.search(request.kind, stamp_to_ns(request.start), stamp_to_ns(request.end),
                                        request.window_seconds, request.text_filter, request.max_results)
        except ValueError as error:
            response.success, response.error_message = False, str(error)
            return response
        response.success = True
        response.descriptions = found["descriptions"]
        response.alerts = found["alerts"]
        return response

    def _warn_throttled(self, key: str, text: str, period_s: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -period_s) >= period_s:
            self._last_warning[key] = now
            self.get_logger().warning(text)


def _key_values(**values) -> list[KeyValue]:
    return [KeyValue(key=key, value=str(value)) for key, value in values.items()]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # Convenience for machines without `ros2 launch`: `perception_node --params-file config/perception.yaml`.
    if "--params-file" in argv and "--ros-args" not in argv:
        index = argv.index("--params-file")
        argv[index:index] = ["--ros-args"]
    rclpy.init(args=argv)
    node = PerceptionNode()
    # Threads: cameras, timers and lifecycle services, plus up to query_max_waiting blocked queries.
    executor = MultiThreadedExecutor(num_threads=4 + parameters.value(node, "query_max_waiting"))
    executor.add_node(node)
    try:
        if parameters.value(node, "autostart"):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("could not configure; waiting for a lifecycle manager")
            else:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.worker is not None:
            node.worker.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
