"""A perception node process on a real checkpoint, a camera feeding it, and watchers of its diagnostics, for the
bad-request, reconfigure and fault tests. Everything goes over DDS, as from any other process."""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from vila_ros.ros.client import SERVICE_QOS, ServiceTimeoutError, call_service, isolated_node
from vila_ros.ros.conversion import rgb_to_image
from vila_ros.ros.diagnostics import local_status_name
from vila_ros.ros.replay_test import Listener, start_node, stop_node
from vila_ros.srv import QueryScene

NODE = "/vila_perception"
S = 1_000_000_000


@contextlib.contextmanager
def running_node(log_dir: Path, parameters: dict[str, str], ready_timeout: float = 60.0, wait_ready: bool = True,
                 allow_tracebacks: bool = False, name: str = NODE[1:]) -> Iterator[tuple[Any, Listener, Path]]:
    """The node `name` as its own process; on exit it must stop cleanly (exit code 0) and, unless
    `allow_tracebacks`, have logged no traceback."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "node.log"
    params = {"event_log_path": str(log_dir / "alerts.jsonl"), "stale_after_s": "0.0", **parameters}
    process = start_node(log, params, name=name)
    listener = Listener(node_name="/" + name)
    try:
        if wait_ready:
            assert listener.wait_for_node(ready_timeout), log.read_text()[-3000:]
        yield process, listener, log
        assert process.poll() is None, "the node died:\n" + log.read_text()[-3000:]
    finally:
        listener.close()
        code = stop_node(process)
    assert code == 0, log.read_text()[-3000:]
    assert allow_tracebacks or "Traceback" not in log.read_text(), log.read_text()[-3000:]


class CameraFeed:
    """Publishes rgb8 frames with steadily advancing stamps from a thread of its own, until closed."""

    def __init__(self, topic: str = "/cameras/front/image_raw", fps: float = 10.0, size: tuple[int, int] = (160, 120),
                 start_ns: int = 1_700_000_000 * S) -> None:
        self._cm = isolated_node("vila_ros_test_camera")
        node = self._cm.__enter__()
        self._publisher = node.create_publisher(Image, topic, QoSProfile(depth=10,
                                                                         reliability=QoSReliabilityPolicy.RELIABLE))
        width, height = size
        rng = np.random.default_rng(0)
        self._frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
        self._period_ns = int(S / fps)
        self._start_ns = start_ns
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            k = self.published
            self._publisher.publish(rgb_to_image(self._frames[k % len(self._frames)],
                                                 self._start_ns + k * self._period_ns, "front_camera"))
            self.published += 1
            self._stop.wait(self._period_ns / S)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._cm.__exit__(None, None, None)


@dataclass
class Diagnostics:
    """Every /diagnostics array the node publishes, with its arrival time (subscribed on the listener's node)."""

    listener: Listener
    arrays: list[tuple[float, DiagnosticArray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener.node.create_subscription(DiagnosticArray, "/diagnostics",
                                               lambda m: self.arrays.append((time.monotonic(), m)), 50)

    def values(self, status_name: str, since: float = 0.0) -> list[tuple[float, dict[str, str], Any]]:
        """(arrival, key -> value, status) of the node's status `status_name` ("camera front", "inference", ...:
        the name after the node's prefix) in each array received after `since`."""
        found = []
        for arrived, array in list(self.arrays):
            for status in array.status:
                if local_status_name(status.name, self.listener.node_name) == status_name and arrived >= since:
                    found.append((arrived, {kv.key: kv.value for kv in status.values}, status))
        return found

    def wait_for(self, status_name: str, predicate, timeout: float, since: float = 0.0):
        """The first (arrival, values, status) after `since` that satisfies `predicate(values, status)`."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.values(status_name, since):
                if predicate(entry[1], entry[2]):
                    return entry
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


class Operator:
    """Parameter changes, lifecycle transitions and single queries from a node of its own."""

    def __init__(self, node, target: str = NODE) -> None:
        self.node = node
        self.target = target

    def set(self, name: str, value: Any):
        if isinstance(value, bool):
            parameter = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            parameter = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            parameter = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            parameter = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=parameter)])
        return call_service(self.node, SetParameters, f"{self.target}/set_parameters", request, 30).results[0]

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return call_service(self.node, ChangeState, f"{self.target}/change_state", request, 60).success

    def state(self) -> str:
        return call_service(self.node, GetState, f"{self.target}/get_state", GetState.Request(), 30).current_state.label

    def ask(self, question: str = "Is there a car?", timeout: float = 30.0, **fields) -> QueryScene.Response:
        return call_service(self.node, QueryScene, f"{self.target}/query_scene",
                            QueryScene.Request(question=question, **fields), timeout)

    def answers_within(self, seconds: float) -> bool:
        """Whether a plain question gets answered within `seconds` (frames must have arrived first)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.ask(max_new_tokens=2).success:
                return True
            time.sleep(0.3)
        return False


@dataclass
class Outcome:
    sent: float
    seconds: float
    response: Any  # None: no answer within the client's timeout


class QueryLoad:
    """Keeps `in_flight` scene queries outstanding at all times, from clients of its own in one spinning thread,
    until stopped; then lets the last ones finish. Records every query's outcome."""

    def __init__(self, in_flight: int = 3, timeout: float = 10.0, question: str = "Is there a car?") -> None:
        self.timeout = timeout
        self.question = question
        self.outcomes: list[Outcome] = []
        self._cm = isolated_node("vila_ros_test_load")
        self._node = self._cm.__enter__()
        self._clients = [self._node.create_client(QueryScene, f"{NODE}/query_scene", qos_profile=SERVICE_QOS)
                         for _ in range(in_flight)]
        for client in self._clients:
            assert client.wait_for_service(timeout_sec=10), "QueryScene is not available"
        self._executor = SingleThreadedExecutor(context=self._node.context)
        self._executor.add_node(self._node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending: list[tuple[Any, float] | None] = [None] * len(self._clients)
        while True:
            now = time.monotonic()
            for i, client in enumerate(self._clients):
                if pending[i] is not None:
                    future, sent = pending[i]
                    if future.done():
                        self.outcomes.append(Outcome(sent, now - sent, future.result()))
                        pending[i] = None
                    elif now - sent > self.timeout:
                        client.remove_pending_request(future)
                        self.outcomes.append(Outcome(sent, now - sent, None))
                        pending[i] = None
                if pending[i] is None and not self._stop.is_set():
                    request = QueryScene.Request(question=self.question, max_new_tokens=4)
                    pending[i] = (client.call_async(request), time.monotonic())
            if self._stop.is_set() and all(p is None for p in pending):
                return
            self._executor.spin_once(timeout_sec=0.02)

    def close(self) -> list[Outcome]:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        assert not self._thread.is_alive(), "queries still pending past their timeout"
        self._executor.shutdown()
        self._cm.__exit__(None, None, None)
        return self.outcomes


__all__ = ["CameraFeed", "Diagnostics", "NODE", "Operator", "Outcome", "QueryLoad", "ServiceTimeoutError",
           "Transition", "running_node"]
