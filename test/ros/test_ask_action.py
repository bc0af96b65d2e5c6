"""The AskScene action over DDS between two processes: streamed feedback, schema, cancel, a vanishing client."""
import json
import subprocess
import sys
import textwrap
import time

import pytest
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

from vila_ros.action import AskScene
from vila_ros.engine.json_schema import validate_answer
from vila_ros.sim.writers import write_bag
from vila_ros.tools.harness import isolated_node, running_node
from vila_ros.tools.replay import replay_bag

ACTION = "/vila_perception/ask_scene"
LONG = json.dumps({"const": "q" * 300})  # ~300 tokens whatever the weights: time to cancel mid-answer


@pytest.fixture(scope="module")
def node(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    bag = write_bag(root / "front", cameras=["front"], fps=10, size=(160, 120), encoding="rgb8", duration=2.0,
                    seed=3, storage="mcap")
    params = {"model_dir": str(tiny_dir), "camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw]",
              "num_frames": "2", "describe_period_s": "0.0", "alert_period_s": "0.0",
              "query_max_new_tokens_limit": "400"}
    with running_node(root / "logs", params) as (process, _listener, log):
        with isolated_node("vila_ros_test_ask_replay") as replayer:
            replay_bag(replayer, bag, rate=1.0)
        yield process, log


@pytest.fixture()
def client():
    with isolated_node("vila_ros_test_ask") as node:
        action = ActionClient(node, AskScene, ACTION)
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        assert action.wait_for_server(timeout_sec=20)
        yield action, executor
        action.destroy()
        executor.shutdown()


@pytest.fixture()
def feedback_topic(client):
    """Every feedback message the server publishes, read from its topic: rclpy's ActionClient stops passing a
    goal's feedback on once its result has arrived, and DDS does not order the feedback topic before the result."""
    action, executor = client
    node = executor.get_nodes()[0]
    messages = []
    subscription = node.create_subscription(AskScene.Impl.FeedbackMessage, ACTION + "/_action/feedback",
                                            messages.append, QoSProfile(depth=1000))
    deadline = time.monotonic() + 10.0
    while not subscription.get_publisher_count() and time.monotonic() < deadline:  # matched before any goal
        executor.spin_once(timeout_sec=0.01)
    assert subscription.get_publisher_count(), "the feedback topic never matched"
    yield messages
    node.destroy_subscription(subscription)


def send(action, executor, feedback, **fields):
    sent = action.send_goal_async(AskScene.Goal(**fields), feedback_callback=lambda m: feedback.append(m.feedback))
    executor.spin_until_future_complete(sent, timeout_sec=30)
    handle = sent.result()
    assert handle is not None and handle.accepted
    return handle


def result_of(handle, executor, timeout=60):
    future = handle.get_result_async()
    executor.spin_until_future_complete(future, timeout_sec=timeout)
    assert future.done(), "no result"
    return future.result()


def test_answer_streams_and_validates(node, client, feedback_topic):
    action, executor = client
    schema = json.dumps({"type": "object", "required": ["person", "where"], "properties": {
        "person": {"type": "boolean"}, "where": {"enum": ["left", "right"]}}})
    feedback = []
    handle = send(action, executor, feedback, question="Is anyone there?", json_schema=schema, max_new_tokens=40)
    done = result_of(handle, executor)
    assert done.status == GoalStatus.STATUS_SUCCEEDED, done.result.error_message
    validate_answer(done.result.answer, schema)
    assert feedback, "no feedback reached the goal's callback"

    def streamed():
        goal = bytes(handle.goal_id.uuid)
        return [m.feedback for m in feedback_topic if bytes(m.goal_id.uuid) == goal]

    # The last feedback the server publishes carries the whole answer; it may be taken after the result.
    deadline = time.monotonic() + 5.0
    while (not streamed() or streamed()[-1].partial_answer.strip() != done.result.answer) \
            and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    published = streamed()
    assert published and published[-1].partial_answer.strip() == done.result.answer
    assert all(a.partial_answer.startswith(b.partial_answer) for b, a in zip(published, published[1:]))
    remaining = iter(m.partial_answer for m in published)  # the callback's are those, in order (some may be skipped)
    assert all(any(text == seen for seen in remaining) for text in (m.partial_answer for m in feedback))
    assert done.result.frame_cameras == ["front", "front"] and len(done.result.frame_stamps) == 2
    assert done.result.generated_tokens > 0 and done.result.decode_ms > 0 and done.result.latency_ms > 0


def test_bad_schema_is_refused_with_the_reason(node, client):
    action, executor = client
    done = result_of(send(action, executor, [], question="Anyone?", json_schema="{oops"), executor)
    assert done.status == GoalStatus.STATUS_ABORTED and "not JSON" in done.result.error_message


def test_cancel_stops_generation(node, client):
    action, executor = client
    feedback = []
    handle = send(action, executor, feedback, question="Spell it.", json_schema=LONG, max_new_tokens=350)
    _wait_for_feedback(feedback, executor)
    cancel = handle.cancel_goal_async()
    executor.spin_until_future_complete(cancel, timeout_sec=10)
    done = result_of(handle, executor)
    assert done.status == GoalStatus.STATUS_CANCELED
    assert "q" * 300 != done.result.answer and ("q" * 300).startswith(done.result.answer.strip('"'))
    assert "cancelled" in done.result.error_message


def _wait_for_feedback(feedback, executor, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not feedback and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    assert feedback, "no feedback"


def test_client_that_disappears_mid_goal(node, client, tmp_path):
    script = textwrap.dedent(f"""
        import os, rclpy
        from rclpy.action import ActionClient
        from vila_ros.action import AskScene
        rclpy.init()
        node = rclpy.create_node("vila_ros_test_vanishing")
        action = ActionClient(node, AskScene, {ACTION!r})
        assert action.wait_for_server(timeout_sec=20)
        got = []
        action.send_goal_async(AskScene.Goal(question="Spell it.", json_schema={LONG!r}, max_new_tokens=350),
                               feedback_callback=lambda m: got.append(1))
        while not got:
            rclpy.spin_once(node, timeout_sec=0.1)
        os._exit(0)  # gone mid-goal, without cancelling or saying goodbye
    """)
    gone = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert gone.returncode == 0, gone.stderr[-2000:]
    process, log = node
    action, executor = client
    done = result_of(send(action, executor, [], question="Still there?", max_new_tokens=8), executor)
    assert done.status == GoalStatus.STATUS_SUCCEEDED, done.result.error_message
    assert process.poll() is None, log.read_text()[-3000:]


def test_query_scene_schema_field(node):
    from vila_ros.srv import QueryScene
    from vila_ros.tools.client import call_service

    schema = json.dumps({"type": "array", "items": {"enum": ["car", "person"]}, "minItems": 1, "maxItems": 3})
    with isolated_node("vila_ros_test_query_schema") as client:
        def ask(**fields):
            return call_service(client, QueryScene, "/vila_perception/query_scene", QueryScene.Request(**fields), 60)

        answer = ask(question="What is there?", json_schema=schema, max_new_tokens=30)
        assert answer.success, answer.error_message
        validate_answer(answer.answer, schema)
        refused = ask(question="What is there?", json_schema='{"type": "string", "pattern": 5}')
        assert not refused.success and "not a valid JSON schema" in refused.error_message
