"""Every vila_ros interface crosses real DDS between two processes with all fields intact."""
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from vila_ros.msg import CornerCaseAlert, SceneDescription
from vila_ros.srv import QueryEvents, QueryScene
from vila_ros.tools.client import ServiceTimeoutError, ServiceUnavailableError, call_service
from vila_ros.tools.harness import isolated_node

HERE = pathlib.Path(__file__).parent
LATCHED = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def ros_node():
    with isolated_node("vila_ros_dds_test") as node:
        yield node


def start_peer(role: str) -> subprocess.Popen:
    # Run by path, the peer finds samples.py beside it.
    peer = subprocess.Popen([sys.executable, str(HERE / "peer.py"), role, "--lifetime", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = peer.stdout.readline()
    if line.strip() != "ready":
        peer.kill()
        raise AssertionError(f"peer {role} failed to start: {line!r} {peer.stderr.read()}")
    return peer


def stop_peer(peer: subprocess.Popen) -> None:
    peer.send_signal(signal.SIGINT)
    try:
        peer.wait(timeout=10)
    except subprocess.TimeoutExpired:
        peer.kill()


def test_every_message_type_arrives_intact(ros_node, samples):
    received = {"descriptions": [], "alerts": []}
    ros_node.create_subscription(SceneDescription, "test/descriptions", received["descriptions"].append, LATCHED)
    ros_node.create_subscription(CornerCaseAlert, "test/alerts", received["alerts"].append, LATCHED)
    peer = start_peer("publish")
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(len(v) for v in received.values()) < 3:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        stop_peer(peer)
    assert received["descriptions"] == [samples.scene_description(i) for i in range(3)]
    assert received["alerts"] == [samples.corner_case_alert(i) for i in range(3)]
    # Spot-check the fields most easily lost in a conversion.
    assert received["descriptions"][0].frame_stamps[7].nanosec == 875_000_000
    assert received["descriptions"][0].text.endswith("Ünïcode ✓")
    assert received["alerts"][2].severity == CornerCaseAlert.CRITICAL
    assert received["alerts"][2].evidence_stamps[1].nanosec == 999_999_999


def test_both_services_are_called_and_answered(ros_node, samples):
    peer = start_peer("serve")
    try:
        scene_request = samples.query_scene_request()
        scene_response = call_service(ros_node, QueryScene, "test/query_scene", scene_request, timeout_sec=20,
                                      discovery_timeout_sec=20, resend_every_sec=2)
        events_request = samples.query_events_request()
        events_response = call_service(ros_node, QueryEvents, "test/query_events", events_request, timeout_sec=20,
                                       discovery_timeout_sec=20, resend_every_sec=2)
    finally:
        stop_peer(peer)
    assert scene_response == samples.query_scene_response(scene_request)
    assert scene_response.answer == "echo: Is anyone in the aisle? [front] 6 32"
    assert events_response == samples.query_events_response(events_request)
    assert len(events_response.descriptions) == 3 and len(events_response.alerts) == 3


def test_absent_peer_fails_clearly_instead_of_hanging(ros_node, samples):
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="not available after 1.0 s"):
        call_service(ros_node, QueryScene, "test/nobody_serves_this", samples.query_scene_request(),
                     discovery_timeout_sec=1.0)
    assert time.monotonic() - started < 10


def test_a_lost_response_is_recovered_by_resending(ros_node, samples):
    import threading

    import rclpy.task
    from rclpy.callback_groups import ReentrantCallbackGroup

    # The server never answers its first request, as when Fast DDS drops a response to a client it has not yet
    # discovered: only a resent request gets an answer.
    with isolated_node("vila_ros_test_forgetful_server") as server:
        seen = []
        never = rclpy.task.Future()

        async def answer_all_but_the_first(request, response):
            seen.append(request.question)
            if len(seen) == 1:
                await never
            return samples.query_scene_response(request)

        server.create_service(QueryScene, "test/forgetful_query_scene", answer_all_but_the_first,
                              callback_group=ReentrantCallbackGroup())  # a stuck request must not block the next
        executor = SingleThreadedExecutor(context=server.context)
        executor.add_node(server)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            request = samples.query_scene_request()
            with pytest.raises(ServiceTimeoutError):
                call_service(ros_node, QueryScene, "test/forgetful_query_scene", request, timeout_sec=3,
                             discovery_timeout_sec=20)
            seen.clear()
            response = call_service(ros_node, QueryScene, "test/forgetful_query_scene", request, timeout_sec=20,
                                    discovery_timeout_sec=20, resend_every_sec=1)
        finally:
            executor.shutdown()
            spinner.join(timeout=5)
    assert response == samples.query_scene_response(request)
    assert len(seen) == 2
