"""Stamps checked at the boundary, history windows on the node's clock, diagnostics judged on a recent window, alert
ids continued across restarts, $ROS_HOME, parameter refusals explained: the parts, without a node process."""
import json
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from vila_ros.ros import diagnostics, parameters, restart
from vila_ros.ros.camera import Camera
from vila_ros.ros.conversion import MAX_STAMP_NS, StampError, checked_stamp_ns, ns_to_stamp, rgb_to_image
from vila_ros.ros.events import END, AlertIds, EventTracker
from vila_ros.ros.frame_buffer import CameraBuffer
from vila_ros.ros.history import History
from vila_ros.ros.parameters import CameraSpec

S = 1_000_000_000


@pytest.mark.parametrize("sec,nanosec,reason", [(2**31 - 1, 4_000_000_000, "nanosec 4000000000"),
                                                (0, 1_000_000_000, "nanosec"), (-1, 0, "before 1970")])
def test_stamps_outside_ros_time_are_refused_never_wrapped(sec, nanosec, reason):
    with pytest.raises(StampError, match=reason):
        checked_stamp_ns(Time(sec=sec, nanosec=nanosec))
    assert checked_stamp_ns(Time(sec=2**31 - 1, nanosec=999_999_999)) == MAX_STAMP_NS
    assert ns_to_stamp(MAX_STAMP_NS) == Time(sec=2**31 - 1, nanosec=999_999_999)
    for outside in (MAX_STAMP_NS + 1, -1):
        with pytest.raises(ValueError):
            ns_to_stamp(outside)


def test_history_windows_count_back_from_the_clock_not_the_newest_stamp():
    now = 1_800_000_000 * S
    history = History()
    for k in range(60):
        history.add("descriptions", now - (60 - k) * S, f"d{k}", f"d{k}")
    history.add("descriptions", now + 86400 * S, "from tomorrow", "future")  # one camera with a wrong clock
    found = history.search(window_s=30.0, now_ns=now)["descriptions"]
    assert found[0] == "d30" and "d59" in found and "future" in found  # no upper bound without an end
    assert history.search(window_s=3.4e38, now_ns=now)["descriptions"][0] == "d0"  # huge: everything
    with pytest.raises(ValueError, match="window_seconds"):
        history.search(window_s=float("inf"), now_ns=now)
    with pytest.raises(ValueError, match="window_seconds"):
        history.search(window_s=float("nan"), now_ns=now)


def _camera():
    return Camera(CameraSpec("front", "/front", False, 4.0), CameraBuffer("front", 0.25, 10.0, 64, 2**30))


def _frame(stamp: Time):
    msg = rgb_to_image(np.zeros((8, 8, 3), np.uint8), 0, "front")
    msg.header.stamp = stamp
    return msg


def test_a_camera_drops_and_counts_bad_and_future_stamps():
    camera, now = _camera(), 1_800_000_000 * S
    clock = lambda: now  # noqa: E731 - the node's clock
    wrapped = camera.ingest(_frame(Time(sec=2**31 - 1, nanosec=4_000_000_000)), clock, 0, 10 * S)
    ahead = camera.ingest(_frame(ns_to_stamp(now + 86400 * S)), clock, 0, 10 * S)
    assert (wrapped.outcome, ahead.outcome) == ("error", "error")
    assert "outside ROS time" in wrapped.warning and "ahead of the node's clock" in ahead.warning
    # A nanosec of a second or more within range is carried into sec, the same everywhere downstream.
    carried = camera.ingest(_frame(Time(sec=1_800_000_006, nanosec=2_000_000_000)), clock, 0, 10 * S)
    assert (carried.outcome, carried.stamp_ns) == ("kept", 1_800_000_008 * S)
    assert camera.ingest(_frame(ns_to_stamp(now + 5 * S)), clock, 0, 10 * S).outcome == "kept"  # within the bound
    assert camera.ingest(_frame(ns_to_stamp(now + 86400 * S)), clock, 0, 0).outcome == "kept"  # bound off
    # Simulated time before the first /clock message reads 0: nothing is "ahead" of it.
    assert _camera().ingest(_frame(ns_to_stamp(now)), lambda: 0, 0, 10 * S).outcome == "kept"
    stats = camera.buffer.stats
    assert (stats.bad_stamps, stats.future_stamps, stats.received, stats.kept) == (1, 1, 5, 3)


def _view(camera, now, window_s=2.0):
    return diagnostics.NodeView(node_name="/n", cameras=[camera], worker=None, model_id="m", event_log=None,
                                stats=None, configure_error="", model_dir="/m", silent_since=None, now=now,
                                window_s=window_s, containers={})


def test_a_cameras_level_recovers_once_its_dropped_frames_are_older_than_the_window():
    camera, now = _camera(), 1_800_000_000 * S
    camera.ingest(_frame(ns_to_stamp(now)), lambda: now, 0, 0)
    assert diagnostics.camera_status(camera, _view(camera, time.monotonic()), {}).level == DiagnosticStatus.OK
    camera.buffer.record_error("corrupt JPEG")
    status = diagnostics.camera_status(camera, _view(camera, time.monotonic()), {})
    assert status.level == DiagnosticStatus.WARN and "corrupt JPEG" in status.message
    later = diagnostics.camera_status(camera, _view(camera, time.monotonic() + 2.5), {})
    assert later.level == DiagnosticStatus.OK and later.message == "receiving"
    assert {kv.key: kv.value for kv in later.values}["decode_errors"] == "1"  # the count stays


def test_the_embedded_model_says_what_it_knows():
    status = diagnostics.unconfigured_status("", "")
    assert {kv.key: kv.value for kv in status.values}["model_note"] == diagnostics.EMBEDDED_MODEL_NOTE
    assert "model_dir" in diagnostics.EMBEDDED_MODEL_NOTE and "simulated" in diagnostics.EMBEDDED_MODEL_NOTE
    assert "model_note" not in {kv.key for kv in diagnostics.unconfigured_status("", "/ckpt").values}


def test_a_restart_continues_ids_and_ends_what_the_last_run_left_open(tmp_path):
    log = tmp_path / "alerts.jsonl"
    records = [{"alert_id": "front/red_light/7", "state": "BEGIN", "camera": "front", "category": "red_light",
                "severity": "CRITICAL", "stamp_ns": 5 * S},
               {"alert_id": "front/sensor_stale/8", "state": "BEGIN", "camera": "front", "category": "sensor_stale",
                "severity": "WARNING", "stamp_ns": 6 * S},
               {"alert_id": "front/sensor_stale/8", "state": "END", "camera": "front", "category": "sensor_stale",
                "severity": "WARNING", "stamp_ns": 7 * S}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"alert_id": "front/x/99", "sta')  # cut by kill
    recovery = restart.read_event_log(log)
    assert recovery.last_number == 8 and list(recovery.open_alerts) == ["front/red_light/7"]
    (end,) = restart.closing_updates(recovery, 9 * S)
    assert (end.alert_id, end.state, end.stamp_ns, end.severity) == ("front/red_light/7", END, 5 * S, 2)
    ids = AlertIds()
    ids.resume(recovery.last_number)
    tracker = EventTracker(ids=ids, confirm=1)
    assert tracker.update("front", ["red_light"], ["red_light"], 10 * S, [10 * S])[0].alert_id == "front/red_light/9"
    ids.resume(2)  # never backwards
    assert ids.new("front", "x") == "front/x/10"
    assert restart.read_event_log(tmp_path / "missing.jsonl").last_number == 0


def test_event_log_path_follows_ros_home(monkeypatch):
    monkeypatch.setenv("ROS_HOME", "/data/ros")
    assert parameters.resolve_log_path("$ROS_HOME/vila_ros/alerts.jsonl") == "/data/ros/vila_ros/alerts.jsonl"
    assert parameters.resolve_log_path("${ROS_HOME}/a.jsonl") == "/data/ros/a.jsonl"
    monkeypatch.delenv("ROS_HOME")
    assert parameters.resolve_log_path("$ROS_HOME/a.jsonl").endswith("/.ros/a.jsonl")
    assert parameters.resolve_log_path("") == ""
    assert parameters.PARAMETERS["event_log_path"][0].startswith("$ROS_HOME/")


def test_rclpys_type_refusals_name_the_parameter_and_the_type_it_needs():
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("vila_ros_param_words", context=context)
    try:
        parameters.declare_parameters(node)
        result = node.set_parameters_atomically([Parameter("alert_period_s", value=1)])
        reason = parameters.explain_refusal(node, [Parameter("alert_period_s", value=1)], result.reason)
        assert reason.startswith("alert_period_s must be a double (with a decimal point, e.g. 1.0), got an integer")
        result = node.set_parameters_atomically([Parameter("clip_fps", value=2.0)])
        assert "read only while the node runs" in parameters.explain_refusal(
            node, [Parameter("clip_fps", value=2.0)], result.reason)
    finally:
        node.destroy_node()
        context.try_shutdown()


def test_a_scene_query_with_a_non_finite_window_is_the_requests_fault_not_the_models(tiny_dir):
    """Whatever submits it (the service, an action): refused as a QueryError, never counted as a model failure."""
    from vila_ros.engine import create_engine
    from vila_ros.ros.frame_buffer import Frame
    from vila_ros.ros.worker import InferenceWorker, QueryError, SceneQuery, WorkerSettings

    buffer = CameraBuffer("front", 0.25, 10.0, 64, 2**30)
    for k in range(4):
        buffer.add(Frame("front", 1_700_000_000 * S + k * S // 4, "f", np.zeros((32, 32, 3), np.uint8)))
    worker = InferenceWorker(create_engine(tiny_dir), {"front": buffer}, WorkerSettings(num_frames=4, min_frames=4),
                             lambda d: None, lambda a: None)
    worker.start()
    try:
        for window in (float("nan"), float("inf"), -1.0):
            with pytest.raises(QueryError, match="window_seconds"):
                worker.submit_query(SceneQuery("Is there a car?", window_seconds=window)).result(timeout=30)
        assert worker.submit_query(SceneQuery("Is there a car?", window_seconds=1e30,
                                              max_new_tokens=2)).result(timeout=60).frames
    finally:
        worker.stop()
    assert worker.stats.failures == 0
