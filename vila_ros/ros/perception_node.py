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

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vila_ros import tasks  # noqa: E402
from vila_ros.msg import CornerCaseAlert, SceneDescription  # noqa: E402
from vila_ros.ros import parameters  # noqa: E402
from vila_ros.ros.conversion import (ImageDecodeError, compressed_to_rgb, image_to_rgb, shrink,  # noqa: E402
                                     stamp_to_ns)
from vila_ros.ros.events import BEGIN, END, AlertUpdate, EventTracker  # noqa: E402
from vila_ros.ros.fault_report import (camera_job_values, inference_fault, status_prefix,  # noqa: E402
                                       unconfigured_status)
from vila_ros.ros.frame_buffer import CameraBuffer, Frame  # noqa: E402
from vila_ros.ros.history import History  # noqa: E402
from vila_ros.ros.node_stats import NodeStats, TimedEngine, container_sizes, process_rss_bytes  # noqa: E402
from vila_ros.ros.outputs import (STATE_NAMES, EventLog, alert_message, alert_record, annotate,  # noqa: E402
                                  description_message)
from vila_ros.ros.query_service import SceneQueryService  # noqa: E402
from vila_ros.ros.worker import InferenceWorker  # noqa: E402
from vila_ros.srv import QueryEvents, QueryScene  # noqa: E402

# Outputs are few and each one matters: reliable, with room for a subscriber that is briefly slow.
OUTPUT_QOS = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
STALE_CATEGORY = "sensor_stale"
GIL_SWITCH_INTERVAL_S = 0.001


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = "vila_perception", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        parameters.declare_parameters(self)
        self.engine = None
        self.worker: InferenceWorker | None = None
        self.buffers: dict[str, CameraBuffer] = {}
        self.cameras: list[parameters.CameraSpec] = []
        self.history = History(parameters.value(self, "history_size"))
        self.node_stats: NodeStats | None = None
        self._frame_ids: dict[str, str] = {}
        self._subscriptions_by_camera: dict[str, object] = {}
        # Camera frames arrive on a node of their own, spun by its own single-threaded executor (`main`): a
        # wake-up of the lifecycle node's multi-threaded executor walks all of its ~30 entities in Python, which
        # at 60 frames/s took half a core and the GIL from everything else (measured with py-spy under
        # `vila-ros bench node`). Global arguments are not reused: a `__node:=` remap would name both nodes alike.
        self.ingest_node = rclpy.create_node(f"{self.get_name()}_ingest", namespace=self.get_namespace(),
                                             context=self.context, use_global_arguments=False,
                                             start_parameter_services=False)
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
        self._configure_error = ""
        self._frame_max_side = parameters.value(self, "frame_max_side")  # read-only: read once, not per frame
        self._on_query_scene = SceneQueryService(lambda: self.worker, lambda name: parameters.value(self, name),
                                                 self._unconfigured_reason, self.get_logger().error)
        self._last_warning: dict[str, float] = {}
        # Diagnostics live as long as the node: an operator must see why a configure failed.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(parameters.value(self, "diagnostics_period_s"),
                                                    self._publish_diagnostics)
        # The services live as long as the node, answering "not configured" (and why) without a model: destroying
        # a service while one of its callbacks runs makes send_response raise in the executor, which ends the node.
        # Deep queues: Fast DDS keeps only `depth` unread requests (and responses) and drops the oldest.
        service_qos = QoSProfile(depth=parameters.value(self, "service_qos_depth"),
                                 reliability=QoSReliabilityPolicy.RELIABLE)
        self._query_services = [
            self.create_service(QueryScene, "~/query_scene", self._on_query_scene, qos_profile=service_qos,
                                callback_group=self._service_group),
            self.create_service(QueryEvents, "~/query_events", self._on_query_events, qos_profile=service_qos,
                                callback_group=self._service_group),
        ]
        self.add_on_set_parameters_callback(self._validate_parameter_change)

    def destroy_node(self) -> None:
        self.ingest_node.destroy_node()
        super().destroy_node()

    # ------------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.cameras = parameters.camera_specs(self)
            self.engine = TimedEngine(self._load_engine())  # its model clock splits latency into model and node
            settings = parameters.worker_settings(self, self.engine.num_video_frames)
        except Exception as error:  # noqa: BLE001 - report any configuration failure as a failed transition
            # CheckpointError messages name the file at fault; the type says what kind of fault it is.
            self._configure_error = f"{type(error).__name__}: {error}"
            self.get_logger().error(f"configuration failed: {self._configure_error}")
            self.engine = None
            return TransitionCallbackReturn.FAILURE
        self._configure_error = ""
        max_bytes = int(parameters.value(self, "buffer_max_megabytes") * 1024 * 1024)
        self.buffers = {
            camera.name: CameraBuffer(camera.name, 1.0 / camera.clip_fps, parameters.value(self, "buffer_seconds"),
                                      parameters.value(self, "buffer_max_frames"), max_bytes)
            for camera in self.cameras}
        self.node_stats = NodeStats(self.buffers, self.engine.model_seconds)
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
            self._subscriptions_by_camera[camera.name] = self.ingest_node.create_subscription(
                # resolved (and remapped) as the lifecycle node would: the ingest node ignores global arguments
                message_type, self.resolve_topic_name(camera.topic),
                lambda msg, name=camera.name: self._on_image(name, msg), image_qos)
        self._activated_wall = time.monotonic()
        self.worker.start()
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def _stop_processing(self) -> None:
        for subscription in self._subscriptions_by_camera.values():
            self.ingest_node.destroy_subscription(subscription)
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
        for publisher in (self._description_pub, self._description_text_pub, self._alert_pub, self._annotated_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._description_pub = self._description_text_pub = self._alert_pub = self._annotated_pub = None
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
        frozen = sorted(parameters.CONFIGURE_TIME & overrides.keys())
        if frozen:
            return SetParametersResult(successful=False, reason=f"{', '.join(frozen)} can be set only while the node "
                                       "is unconfigured (deactivate and clean up first)")
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
        stats = self.node_stats
        token = stats.begin_callback() if stats is not None else None
        result = self._ingest(camera, msg)
        if result is not None and token is not None:
            outcome, stamp_ns = result
            # Against the node's clock: publish-to-processed latency for cameras that stamp at capture.
            stats.end_callback(token, camera, outcome, stamp_ns, self.get_clock().now().nanoseconds - stamp_ns)

    def _ingest(self, camera: str, msg) -> tuple[str, int] | None:
        """Decide, decode and buffer one frame; (kept | skipped | error, stamp), or None when not processing."""
        buffer, worker = self.buffers.get(camera), self.worker  # read once: a cleanup may clear them meanwhile
        if buffer is None or worker is None:
            return None
        self._last_frame_wall[camera] = time.monotonic()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:  # some drivers leave stamps empty: fall back to receipt time, and say so once
            stamp_ns = self.get_clock().now().nanoseconds
            self._warn_throttled(f"{camera}-stamp", f"camera {camera}: images have no header stamp; using receipt time")
        if not buffer.wants(stamp_ns):
            return "skipped", stamp_ns
        try:
            rgb = (shrink(compressed_to_rgb(msg, min_long_side=self._frame_max_side or None), self._frame_max_side)
                   if isinstance(msg, CompressedImage) else image_to_rgb(msg, self._frame_max_side))
        except ImageDecodeError as error:
            buffer.record_error(str(error))
            self._warn_throttled(f"{camera}-decode", f"camera {camera}: dropped a frame: {error}")
            return "error", stamp_ns
        buffer.add(Frame(camera, stamp_ns, msg.header.frame_id, rgb))
        self._frame_ids[camera] = msg.header.frame_id
        worker.notify()
        return "kept", stamp_ns

    # --------------------------------------------------------------------------------------------- outputs
    def _publish_description(self, description) -> None:
        msg = description_message(description, self.engine.model_id)
        newest = description.frames[-1]
        self.history.add("descriptions", newest.stamp_ns, description.text, msg)
        self._description_pub.publish(msg)
        if self.node_stats is not None:
            timings = description.timings
            self.node_stats.record_description(description.camera, newest.stamp_ns,
                                               timings.vision_ms + timings.prefill_ms + timings.decode_ms)
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
        if self.worker is None:
            array.status.append(unconfigured_status(self._configure_error, parameters.value(self, "model_dir")))
        health = self.worker.job_health() if self.worker is not None else {}
        for camera, buffer in self.buffers.items():
            stats = buffer.stats
            status = DiagnosticStatus(name=f"camera {camera}", hardware_id=camera)
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
            status.values += camera_job_values(camera, health)
            if self.node_stats is not None:
                status.values += _key_values(**self.node_stats.camera_values(camera))
            array.status.append(status)
        if self.worker is not None:
            stats = self.worker.stats
            status = DiagnosticStatus(name="inference", hardware_id=self.engine.model_id)
            status.level, status.message, fault_values = inference_fault(health, stats.failures, stats.last_error,
                                                                         time.monotonic())
            status.values = _key_values(model=self.engine.model_id, descriptions=stats.descriptions,
                                        alert_checks=stats.alert_checks, queries=stats.queries,
                                        failures=stats.failures, last_latency_ms=round(stats.last_latency_ms, 1),
                                        busy_seconds=round(stats.busy_s, 2),
                                        event_log_written=self.event_log.written,
                                        event_log_errors=self.event_log.errors) + fault_values
            if self.event_log.errors and status.level == DiagnosticStatus.OK:
                status.level, status.message = DiagnosticStatus.WARN, f"event log: {self.event_log.last_error}"
            array.status.append(status)
        array.status.extend(self._stats_statuses())
        prefix = status_prefix(self.get_fully_qualified_name())
        for status in array.status:
            status.name = f"{prefix}: {status.name}"
        self._diagnostics_pub.publish(array)

    def _stats_statuses(self) -> list[DiagnosticStatus]:
        """Description latency minus model time, and the size of every container (one that keeps growing leaks)."""
        if self.node_stats is None or self.worker is None:
            return []
        latency = DiagnosticStatus(name="description latency", level=DiagnosticStatus.OK,
                                   message="ms since activation, from receipt of the newest frame to publication")
        latency.values = _key_values(**self.node_stats.description_values())
        sizes = container_sizes({"node": self, "worker": self.worker, "tracker": self.worker.tracker,
                                 "history": self.history, "engine": getattr(self.engine, "inner", self.engine),
                                 "stats": self.node_stats})
        for camera, buffer in self.buffers.items():
            sizes.update({f"buffer.{camera}.frames": len(buffer), f"buffer.{camera}.frames.bound": buffer.max_frames,
                          f"buffer.{camera}.bytes": buffer.nbytes, f"buffer.{camera}.bytes.bound": buffer.max_bytes})
        queues = DiagnosticStatus(name="queues", level=DiagnosticStatus.OK,
                                  message="sizes of containers that could grow; process memory")
        queues.values = _key_values(**sizes, rss_bytes=process_rss_bytes(), threads=threading.active_count())
        return [latency, queues]

    # -------------------------------------------------------------------------------------------- services
    def _unconfigured_reason(self) -> str:
        reason = "the perception node is not configured"
        return f"{reason}: configuration failed: {self._configure_error}" if self._configure_error else reason

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
    # The ingest executor, the inference worker and the service threads hand the GIL to each other all the time; a
    # thread that wants it back (a woken worker, a camera callback behind a decode step) would otherwise wait out up
    # to CPython's default 5 ms switch interval while another runs Python.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    rclpy.init(args=argv)
    node = PerceptionNode()
    # Threads: timers and lifecycle and parameter services, plus up to query_max_waiting blocked queries.
    executor = MultiThreadedExecutor(num_threads=3 + parameters.value(node, "query_max_waiting"))
    executor.add_node(node)
    ingest_executor = SingleThreadedExecutor()
    ingest_executor.add_node(node.ingest_node)
    ingest_thread = threading.Thread(target=_spin_until_shutdown, args=(ingest_executor,), name="vila_ros_ingest",
                                     daemon=True)
    ingest_thread.start()
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
        ingest_executor.shutdown()  # wakes and ends its spin
        ingest_thread.join(5)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin_until_shutdown(executor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    sys.exit(main())
