"""Against real node processes over DDS: stamps outside ROS time or far ahead of the node's clock are dropped and
counted while QueryEvents windows keep counting back from the clock; a camera's diagnostics recover; a node killed
mid-event and restarted continues its alert ids and its event log and ENDs what it left open; a camera process that
restarts is picked up again; parameters are checked the same while unconfigured; the embedded model says what it
knows."""
import json
import signal
import subprocess
import sys
import time

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from vila_ros.resources import DEFAULT_MODEL_DIR
from vila_ros.ros.conversion import rgb_to_image, stamp_to_ns
from vila_ros.ros.diagnostics import EMBEDDED_MODEL_NOTE
from vila_ros.ros.restart import RESTART_TEXT
from vila_ros.srv import QueryEvents
from vila_ros.tools.client import call_service
from vila_ros.tools.drivers import CameraFeed, Operator
from vila_ros.tools.harness import Diagnostics, Listener, isolated_node, running_node, start_node, stop_node

S = 1_000_000_000
NODE = "/vila_perception"


def test_bad_and_future_stamps_are_dropped_and_history_windows_follow_the_clock(tiny_dir, tmp_path):
    import numpy as np

    params = {"model_dir": str(tiny_dir), "camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw]",
              "describe_period_s": "0.5", "alert_period_s": "0.5", "describe_max_new_tokens": "3",
              "diagnostics_period_s": "0.3", "diagnostics_window_s": "1.5", "stamp_max_future_s": "10.0"}
    with running_node(tmp_path, params) as (process, listener, log):
        diagnostics = Diagnostics(listener)
        feed = CameraFeed(start_ns=time.time_ns())
        try:
            assert listener.wait_for(lambda: len(listener.description_messages) >= 2, 60), log.read_text()[-2000:]
            with isolated_node("vila_ros_stamp_sender") as node:
                publisher = node.create_publisher(Image, "/cameras/front/image_raw",
                                                  QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE))
                frame = np.full((120, 160, 3), 90, np.uint8)
                for k in range(30):  # three seconds of frames stamped a day ahead
                    publisher.publish(rgb_to_image(frame, time.time_ns() + 86400 * S + k * S // 10, "front_camera"))
                    wrapped = rgb_to_image(frame, 0, "front_camera")
                    wrapped.header.stamp = Time(sec=2**31 - 1, nanosec=4_000_000_000)
                    publisher.publish(wrapped)
                    # A second ahead of the feed (which never runs ahead of the clock): past the clip-rate grid's
                    # next tick, so the frame is decoded and fails rather than skipped for arriving too soon.
                    broken = rgb_to_image(frame, time.time_ns() + S, "front_camera")
                    broken.data = bytes(100)  # shorter than height x step
                    publisher.publish(broken)
                    time.sleep(0.1)
            entry = diagnostics.wait_for("camera front", lambda v, s: int(v["future_stamps"]) > 0
                                         and int(v["bad_stamps"]) > 0 and int(v["decode_errors"]) > 0, 10)
            assert entry is not None, diagnostics.values("camera front")[-1][1]
            assert entry[2].level == DiagnosticStatus.WARN
            # Good frames only from here: the camera's level comes back within the window (1.5 s).
            recovered = diagnostics.wait_for("camera front", lambda v, s: s.level == DiagnosticStatus.OK, 10,
                                             since=time.monotonic())
            assert recovered is not None and recovered[2].message == "receiving"
            answer = call_service(listener.node, QueryEvents, f"{NODE}/query_events",
                                  QueryEvents.Request(window_seconds=60.0), 30)
            assert answer.success and answer.descriptions, answer.error_message
        finally:
            feed.close()
    now = time.time_ns()
    published = listener.description_messages + listener.alert_messages
    assert all(0 <= stamp_to_ns(m.header.stamp) <= now + 10 * S for m in published)
    logged = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert all(0 <= r["stamp_ns"] <= now + 10 * S for r in logged)


def _camera_process(tmp_path, tag, seconds):
    """A camera of its own process (current stamps), for `seconds` after the node subscribed."""
    return subprocess.Popen([sys.executable, "-m", "vila_ros.bench.node_load", "--name", "cam", "--width", "160",
                             "--height", "120", "--fps", "10", "--duration", str(seconds),
                             "--out", str(tmp_path / f"camera_{tag}.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _stale(listener, state):
    return [a for a in listener.alert_messages if a.category == "sensor_stale" and a.state == state]


def _open_stale(listener):
    ended = {a.alert_id for a in _stale(listener, 2)}
    return [a for a in _stale(listener, 0) if a.alert_id not in ended]


def test_a_node_killed_mid_event_restarts_with_new_ids_the_same_log_and_ends_what_it_left_open(tiny_dir, tmp_path):
    log_path = tmp_path / "alerts.jsonl"
    params = {"model_dir": str(tiny_dir), "camera_names": "[cam]", "camera_topics": "[/bench/cam/image_raw]",
              "describe_period_s": "0.0", "alert_period_s": "0.0", "stale_after_s": "1.0",
              "event_log_path": str(log_path), "diagnostics_period_s": "0.3"}
    first = start_node(tmp_path / "first.log", params)
    listener = Listener()
    camera = None
    try:
        assert listener.wait_for_node(90), (tmp_path / "first.log").read_text()[-2000:]
        camera = _camera_process(tmp_path, "a", 2.0)
        # Its frames first, then its silence: killed before the camera matched, the node would leave it waiting.
        # The node also reports the camera stale before its first frame (and ENDs that when the frames come).
        assert camera.wait(90) == 0
        assert listener.wait_for(lambda: _open_stale(listener), 30), (tmp_path / "first.log").read_text()[-2000:]
        (open_alert,) = _open_stale(listener)
        first.send_signal(signal.SIGKILL)  # mid-event: its sensor_stale alert never gets an END from this run
        first.wait(10)
    finally:
        listener.close()
        if first.poll() is None:
            first.kill()
        if camera is not None:
            camera.wait(30)
    # Whether the camera's first frame beat the limit decides if the log also holds a stale BEGIN / END before it.
    first_run = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert (first_run[-1]["alert_id"], first_run[-1]["state"]) == (open_alert.alert_id, "BEGIN")
    assert {r["alert_id"] for r in first_run if r["state"] == "END"} == {
        r["alert_id"] for r in first_run[:-1] if r["state"] == "BEGIN"}

    second = start_node(tmp_path / "second.log", params)
    listener = Listener()
    try:
        assert listener.wait_for_node(90), (tmp_path / "second.log").read_text()[-2000:]
        # The left-open alert is ENDed, and the camera (still silent) is announced again under a new id.
        assert listener.wait_for(lambda: _stale(listener, 2) and _stale(listener, 0), 30)
        (closed,) = [a for a in _stale(listener, 2) if a.alert_id == open_alert.alert_id]
        assert closed.text == RESTART_TEXT
        again = _stale(listener, 0)[0]
        assert again.alert_id != open_alert.alert_id
        assert int(again.alert_id.rsplit("/", 1)[1]) > int(open_alert.alert_id.rsplit("/", 1)[1])
        # The camera's process restarts: its frames are picked up again (the stale alert ENDs).
        camera = _camera_process(tmp_path, "b", 3.0)
        assert listener.wait_for(lambda: any(a.alert_id == again.alert_id for a in _stale(listener, 2)), 30)
        assert listener.wait_for(lambda: int(listener.latest_diagnostics()["camera cam"]["kept"]) > 0, 10)
        camera.wait(30)
        # Silent again, then deactivated: the open alert gets its END at deactivate.
        assert listener.wait_for(lambda: len(_stale(listener, 0)) >= 2, 30)
        with isolated_node("vila_ros_restart_operator") as node:
            assert Operator(node).transition(Transition.TRANSITION_DEACTIVATE)
        assert listener.wait_for(lambda: len(_stale(listener, 2)) >= 3, 10)
        assert "deactivated" in _stale(listener, 2)[-1].text
    finally:
        listener.close()
        assert stop_node(second) == 0
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert records[:len(first_run)] == first_run and len(records) >= len(first_run) + 5  # one log, both runs
    begins = [r["alert_id"] for r in records if r["state"] == "BEGIN"]
    assert len(begins) == len(set(begins))
    assert {r["alert_id"] for r in records if r["state"] == "END"} == set(begins)


def _set(node, name, kind, **value):
    request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(type=kind, **value))])
    return call_service(node, SetParameters, f"{NODE}/set_parameters", request, 30).results[0]


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no embedded model")
def test_parameters_are_checked_while_unconfigured_and_the_embedded_model_says_what_it_knows(tmp_path):
    with running_node(tmp_path, {"autostart": "false", "diagnostics_period_s": "0.3"}, wait_ready=False) as (
            process, listener, log):
        assert listener.wait_for(lambda: "node" in listener.latest_diagnostics(), 60), log.read_text()[-2000:]
        assert listener.latest_diagnostics()["node"]["model_note"] == EMBEDDED_MODEL_NOTE
        with isolated_node("vila_ros_unconfigured_operator") as node:
            refused = _set(node, "alert_categories", ParameterType.PARAMETER_STRING_ARRAY,
                           string_array_value=["red_light", "nope"])
            assert not refused.successful and "unknown alert categories ['nope']" in refused.reason
            wrong_type = _set(node, "alert_period_s", ParameterType.PARAMETER_INTEGER, integer_value=1)
            assert not wrong_type.successful and wrong_type.reason.startswith("alert_period_s must be a double")
            assert _set(node, "describe_prompt", ParameterType.PARAMETER_STRING, string_value="Describe.").successful
            operator = Operator(node)
            assert operator.transition(Transition.TRANSITION_CONFIGURE)  # the refused value did not stick
            assert listener.wait_for(lambda: "model_note" in listener.latest_diagnostics().get("inference", {}), 10)
        assert EMBEDDED_MODEL_NOTE in log.read_text()
