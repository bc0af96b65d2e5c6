"""Every field of every request the node accepts, fuzzed (hypothesis) against one real node process over DDS: NaN,
+-inf, huge and negative numbers, stamps outside ROS time, odd strings. Each request is answered or refused with a
reason; none is fatal, none counts as a model failure. Then faults injected into every guard of a second node
process (VILA_ROS_INJECT_FAULT): each is logged with its traceback, answered as an internal error where someone
waits, and the node stays up."""
import contextlib
import math
import os
import time

import pytest
from builtin_interfaces.msg import Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor

from vila_ros.action import AskScene
from vila_ros.ros.parameters import PARAMETERS
from vila_ros.srv import QueryEvents, QueryScene
from vila_ros.tools.client import SERVICE_QOS
from vila_ros.tools.drivers import CameraFeed, Operator
from vila_ros.tools.harness import isolated_node, running_node

NODE = "/vila_perception"
PARAMETER_NODE = "/vila_perception_parameters"
LIVE = {"camera_names": "[front]", "camera_topics": "[/cameras/front/image_raw]", "describe_period_s": "1.0",
        "alert_period_s": "1.0", "query_timeout_s": "20.0", "query_max_new_tokens_limit": "3",
        "describe_max_new_tokens": "3", "diagnostics_period_s": "0.5"}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


class Caller:
    """One persistent client per service (discovery once), each call spun to its answer or a failure."""

    def __init__(self, node, service_type, name):
        self.node = node
        self.client = node.create_client(service_type, name, qos_profile=SERVICE_QOS)
        assert self.client.wait_for_service(timeout_sec=20), name
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)

    def __call__(self, request, timeout=30.0):
        future = self.client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        assert future.done(), f"no answer within {timeout} s to {request}"
        return future.result()

    def close(self):
        self.executor.remove_node(self.node)
        self.executor.shutdown()
        self.node.destroy_client(self.client)


@contextlib.contextmanager
def _live_node(tiny_dir, log_dir, name=NODE[1:], allow_tracebacks=False):
    with running_node(log_dir, {**LIVE, "model_dir": str(tiny_dir)}, allow_tracebacks=allow_tracebacks,
                      name=name) as (process, listener, log):
        feed = CameraFeed(start_ns=time.time_ns())
        try:
            with isolated_node("vila_ros_fuzzer") as node:
                assert Operator(node, f"/{name}").answers_within(30), log.read_text()[-2000:]
                yield process, listener, node, log
        finally:
            feed.close()


@pytest.fixture(scope="module")
def fuzz_node(tiny_dir, tmp_path_factory):
    with _live_node(tiny_dir, tmp_path_factory.mktemp("fuzz_node")) as running:
        yield running


@pytest.fixture()
def parameter_fuzz_node(tiny_dir, tmp_path):
    """A node of its own: fuzzed settings may leave its periodic jobs failing (handled: logged with a traceback and
    retried), which the other fuzz tests would count against their own requests."""
    with _live_node(tiny_dir, tmp_path, PARAMETER_NODE[1:], allow_tracebacks=True) as running:
        yield running


# Every value a float32 field can carry (NaN, both infinities, float32 extremes) and some it cannot (1e39 -> inf).
floats = st.one_of(st.floats(width=32), st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -0.0, 3.4e38]))
uint32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1]))
stamps = st.builds(Time, sec=st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from([0, -1, 2**31 - 1])),
                   nanosec=st.one_of(uint32, st.sampled_from([999_999_999, 1_000_000_000, 4_000_000_000])))
odd_text = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\u0000", "front\u0000", "<image>" * 9, "é" * 30,
                                                            "\u202e", "%s%n", "../../etc/passwd", "x" * 9000]))


def _inference_failures(listener):
    return int(listener.latest_diagnostics().get("inference", {}).get("failures", "0"))


def _both_outcomes_and_no_model_failure(kind, outcomes, listener, failures_before):
    print(f"[figures] {kind} fuzz: {outcomes}")
    assert outcomes["answered"] > 0 and outcomes["refused"] > 0
    time.sleep(1.2)  # a fresh /diagnostics
    assert _inference_failures(listener) == failures_before


def test_query_events_fuzzed_fields_are_answered_or_refused(fuzz_node):
    process, listener, node, log = fuzz_node
    call = Caller(node, QueryEvents, f"{NODE}/query_events")
    outcomes = {"answered": 0, "refused": 0}

    @FUZZ
    @given(start=stamps, end=stamps, window=floats, text=odd_text,
           kind=st.one_of(st.sampled_from(["", "alerts", "descriptions", "ALERTS"]), odd_text), max_results=uint32)
    def one(start, end, window, text, kind, max_results):
        response = call(QueryEvents.Request(start=start, end=end, window_seconds=window, text_filter=text, kind=kind,
                                            max_results=max_results))
        assert response.success or response.error_message, (start, end, window, kind)
        if not math.isfinite(window) or window < 0:
            assert not response.success and "window_seconds" in response.error_message
        if start.nanosec >= 1_000_000_000 or end.nanosec >= 1_000_000_000 or start.sec < 0 or end.sec < 0:
            assert not response.success and ("nanosec" in response.error_message
                                             or "before 1970" in response.error_message
                                             or "window_seconds" in response.error_message
                                             or "kind" in response.error_message)
        outcomes["answered" if response.success else "refused"] += 1
        assert process.poll() is None, log.read_text()[-3000:]

    try:
        one()
    finally:
        call.close()
    print(f"[figures] QueryEvents fuzz: {outcomes}")
    assert outcomes["refused"] > 0


def test_query_scene_fuzzed_fields_are_answered_or_refused_never_a_model_failure(fuzz_node):
    process, listener, node, log = fuzz_node
    call = Caller(node, QueryScene, f"{NODE}/query_scene")
    failures_before = _inference_failures(listener)
    outcomes = {"answered": 0, "refused": 0}

    @FUZZ
    @given(question=st.one_of(st.just("Is there a car?"), odd_text), camera=st.one_of(st.sampled_from(["", "front"]),
                                                                                        odd_text),
           window=floats, frames=uint32, tokens=uint32,
           schema=st.one_of(st.just(""), st.just('{"type": "boolean"}'), odd_text))
    def one(question, camera, window, frames, tokens, schema):
        response = call(QueryScene.Request(question=question, camera=camera, window_seconds=window,
                                           window_frames=frames, max_new_tokens=tokens, json_schema=schema))
        assert response.success or response.error_message
        assert "inference failed" not in response.error_message and "internal error" not in response.error_message
        if not math.isfinite(window) or window < 0:
            assert not response.success and "window_seconds" in response.error_message
        outcomes["answered" if response.success else "refused"] += 1
        assert process.poll() is None, log.read_text()[-3000:]

    try:
        one()
    finally:
        call.close()
    _both_outcomes_and_no_model_failure("QueryScene", outcomes, listener, failures_before)


def _value(kind, value):
    fields = {ParameterType.PARAMETER_BOOL: "bool_value", ParameterType.PARAMETER_INTEGER: "integer_value",
              ParameterType.PARAMETER_DOUBLE: "double_value", ParameterType.PARAMETER_STRING: "string_value",
              ParameterType.PARAMETER_STRING_ARRAY: "string_array_value",
              ParameterType.PARAMETER_DOUBLE_ARRAY: "double_array_value",
              ParameterType.PARAMETER_INTEGER_ARRAY: "integer_array_value"}
    return ParameterValue(type=kind, **{fields[kind]: value})


parameter_values = st.one_of(
    st.builds(_value, st.just(ParameterType.PARAMETER_DOUBLE), floats.map(float)),
    st.builds(_value, st.just(ParameterType.PARAMETER_INTEGER), st.integers(-2**63, 2**63 - 1)),
    st.builds(_value, st.just(ParameterType.PARAMETER_BOOL), st.booleans()),
    st.builds(_value, st.just(ParameterType.PARAMETER_STRING), odd_text),
    st.builds(_value, st.just(ParameterType.PARAMETER_STRING_ARRAY), st.lists(odd_text, max_size=4)),
    st.builds(_value, st.just(ParameterType.PARAMETER_DOUBLE_ARRAY), st.lists(floats.map(float), max_size=3)),
    st.builds(_value, st.just(ParameterType.PARAMETER_INTEGER_ARRAY), st.lists(st.integers(-9, 2**40), max_size=3)))


def typed_values(name):
    """Values of the parameter's own type (most fuzzed values should get past rclpy's type check)."""
    default = PARAMETERS[name][0] if name in PARAMETERS else ""
    if isinstance(default, bool):
        return st.builds(_value, st.just(ParameterType.PARAMETER_BOOL), st.booleans())
    if isinstance(default, float):
        return st.builds(_value, st.just(ParameterType.PARAMETER_DOUBLE), floats.map(float))
    if isinstance(default, int):
        return st.builds(_value, st.just(ParameterType.PARAMETER_INTEGER),
                         st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-2, 300)))
    if isinstance(default, list) and default and isinstance(default[0], float):
        return st.builds(_value, st.just(ParameterType.PARAMETER_DOUBLE_ARRAY), st.lists(floats.map(float), max_size=3))
    if isinstance(default, list):
        return st.builds(_value, st.just(ParameterType.PARAMETER_STRING_ARRAY), st.lists(odd_text, max_size=4))
    return st.builds(_value, st.just(ParameterType.PARAMETER_STRING), odd_text)


def test_parameters_fuzzed_are_set_or_refused_with_the_name_and_reason(parameter_fuzz_node):
    process, listener, node, log = parameter_fuzz_node
    call = Caller(node, SetParameters, f"{PARAMETER_NODE}/set_parameters")
    # Parameters that would only slow the rest of the run down (the model's own settings are refused anyway).
    names = sorted(set(PARAMETERS) - {"describe_period_s", "alert_period_s"}) + ["no_such_parameter", ""]
    outcomes = {"set": 0, "refused": 0}

    @FUZZ
    @given(name_value=st.sampled_from(names).flatmap(
        lambda name: st.tuples(st.just(name), st.one_of(typed_values(name), parameter_values))))
    def one(name_value):
        name, value = name_value
        result = call(SetParameters.Request(parameters=[Parameter(name=name, value=value)]), timeout=30).results[0]
        assert result.successful or result.reason, (name, value)
        if not result.successful and name in PARAMETERS:
            assert name in result.reason or "internal error" not in result.reason, result.reason
        if "Wrong parameter type" in result.reason:
            assert result.reason.startswith(f"{name} must be "), result.reason
        outcomes["set" if result.successful else "refused"] += 1
        assert process.poll() is None, log.read_text()[-3000:]

    try:
        one()
    finally:
        call.close()
    print(f"[figures] parameter fuzz: {outcomes}")
    assert outcomes["refused"] > 0
    with isolated_node("vila_ros_fuzz_after") as other:
        assert Operator(other, PARAMETER_NODE).state() == "active"


class Asker:
    """One persistent AskScene client; each goal spun to rejection or to its result."""

    def __init__(self, node, target=NODE):
        self.node = node
        self.client = ActionClient(node, AskScene, f"{target}/ask_scene")
        assert self.client.wait_for_server(timeout_sec=20)
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)

    def _spin_until(self, future, timeout):
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        assert future.done(), f"nothing within {timeout} s"
        return future.result()

    def __call__(self, goal, timeout=30.0, cancel=False):
        """(accepted, result or None); with cancel, a cancel is requested right after acceptance."""
        handle = self._spin_until(self.client.send_goal_async(goal), timeout)
        if not handle.accepted:
            return False, None
        if cancel:
            self._spin_until(handle.cancel_goal_async(), timeout)
        return True, self._spin_until(handle.get_result_async(), timeout).result

    def close(self):
        self.executor.remove_node(self.node)
        self.executor.shutdown()
        self.client.destroy()


def test_ask_scene_fuzzed_goals_are_answered_or_refused_never_a_model_failure(fuzz_node):
    process, listener, node, log = fuzz_node
    ask = Asker(node)
    failures_before = _inference_failures(listener)
    outcomes = {"answered": 0, "refused": 0, "rejected": 0, "cancelled": 0}

    @FUZZ
    @given(question=st.one_of(st.just("Is there a car?"), odd_text),
           camera=st.one_of(st.sampled_from(["", "front", "rear"]), odd_text),
           window=floats, frames=uint32, tokens=uint32,
           schema=st.one_of(st.just(""), st.just('{"type": "boolean"}'), odd_text), cancel=st.booleans())
    def one(question, camera, window, frames, tokens, schema, cancel):
        goal = AskScene.Goal(question=question, camera=camera, window_seconds=window, window_frames=frames,
                             max_new_tokens=tokens, json_schema=schema)
        accepted, result = ask(goal, cancel=cancel)
        assert process.poll() is None, log.read_text()[-3000:]
        if not accepted:
            outcomes["rejected"] += 1
            return
        assert result.success or result.error_message, goal
        assert "inference failed" not in result.error_message and "internal error" not in result.error_message, \
            result.error_message
        if not math.isfinite(window) or window < 0:
            # The question is checked first, as a refusal of its own.
            assert not result.success and ("window_seconds" in result.error_message
                                           or "question" in result.error_message), result.error_message
        if cancel and not result.success and "cancel" in result.error_message:
            outcomes["cancelled"] += 1
        outcomes["answered" if result.success else "refused"] += 1

    try:
        one()
        # Still answers a plain goal after all of that.
        accepted, result = ask(AskScene.Goal(question="Is there a car?", camera="front"))
        assert accepted and result.success, result.error_message
    finally:
        ask.close()
    _both_outcomes_and_no_model_failure("AskScene", outcomes, listener, failures_before)


# ------------------------------------------------------------------------------------------------ injected faults
GUARDS = "query_scene,query_events,ask_scene,parameters,diagnostics,image,deactivate"
FAULTY = "vila_faulty"  # beside the fuzzed node, which the module keeps running


@pytest.fixture(scope="module")
def faulty_node(tiny_dir, tmp_path_factory):
    """A node whose guards named in GUARDS raise before running their callback (VILA_ROS_INJECT_FAULT)."""
    log_dir = tmp_path_factory.mktemp("faulty_node")
    os.environ["VILA_ROS_INJECT_FAULT"] = GUARDS
    try:
        context = running_node(log_dir, {**LIVE, "model_dir": str(tiny_dir)}, allow_tracebacks=True, name=FAULTY)
        process, listener, log = context.__enter__()
    finally:
        del os.environ["VILA_ROS_INJECT_FAULT"]
    feed = CameraFeed(start_ns=time.time_ns())
    try:
        with isolated_node("vila_ros_fault_operator") as node:
            yield process, listener, node, log
    finally:
        feed.close()
        context.__exit__(None, None, None)


def test_an_exception_in_any_callback_is_answered_logged_and_survived(faulty_node):
    process, listener, node, log = faulty_node
    operator = Operator(node, target=f"/{FAULTY}")
    scene = operator.ask()
    assert not scene.success and scene.error_message.startswith("internal error in query_scene: InjectedFault")
    events = Caller(node, QueryEvents, f"/{FAULTY}/query_events")
    try:
        answer = events(QueryEvents.Request())
    finally:
        events.close()
    assert not answer.success and "internal error in query_events" in answer.error_message
    ask = Asker(node, target=f"/{FAULTY}")
    try:
        accepted, result = ask(AskScene.Goal(question="Is there a car?"))
    finally:
        ask.close()
    assert accepted and not result.success
    assert result.error_message.startswith("internal error in ask_scene: InjectedFault")
    refused = operator.set("describe_prompt", "Describe.")
    assert not refused.successful and "internal error in parameters" in refused.reason
    time.sleep(2.0)  # frames arrive (each callback raising) and diagnostics are due (each timer tick raising)
    assert process.poll() is None
    # A transition that raises: rclpy's ERROR path, then on_error leaves the node unconfigured and working.
    assert not operator.transition(Transition.TRANSITION_DEACTIVATE)
    assert operator.state() == "unconfigured"
    assert operator.transition(Transition.TRANSITION_CONFIGURE) and operator.state() == "inactive"
    text = log.read_text()
    for guard in GUARDS.split(","):
        assert f"internal error in {guard}: InjectedFault" in text, guard
    assert text.count("Traceback") >= len(GUARDS.split(","))
    assert process.poll() is None
