"""Driving a running perception node over DDS, as any other process would: `Operator` (parameter changes,
lifecycle transitions, single scene queries), `CameraFeed` (a synthetic rgb8 camera in a thread of its own) and
`QueryLoad` (scene queries kept in flight from clients of their own)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from vila_ros.ros.conversion import rgb_to_image
from vila_ros.sim.writers import DEFAULT_START_NS
from vila_ros.srv import QueryScene
from vila_ros.tasks import NANOSECONDS
from vila_ros.tools.client import SERVICE_QOS, call_service
from vila_ros.tools.harness import NODE_NAME, isolated_node


class Operator:
    """Parameter changes, lifecycle transitions and single queries through the caller's node (which nothing else
    spins meanwhile: each call spins it until its answer comes)."""

    def __init__(self, node: Node, target: str = f"/{NODE_NAME}") -> None:
        self.node = node
        self.target = target

    def set(self, name: str, value: Any) -> Any:
        """Set one parameter; returns its SetParametersResult (successful, reason)."""
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

    def ask(self, question: str = "Is there a car?", timeout: float = 30.0, **fields: Any) -> QueryScene.Response:
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


class CameraFeed:
    """Publishes rgb8 frames with steadily advancing stamps from a thread of its own, until closed."""

    def __init__(self, topic: str = "/cameras/front/image_raw", fps: float = 10.0, size: tuple[int, int] = (160, 120),
                 start_ns: int = DEFAULT_START_NS) -> None:
        self._cm = isolated_node("vila_ros_test_camera")
        node = self._cm.__enter__()
        self._publisher = node.create_publisher(Image, topic, QoSProfile(depth=10,
                                                                         reliability=QoSReliabilityPolicy.RELIABLE))
        width, height = size
        rng = np.random.default_rng(0)
        self._frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
        self._period_ns = int(NANOSECONDS / fps)
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
            self._stop.wait(self._period_ns / NANOSECONDS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._cm.__exit__(None, None, None)


@dataclass
class Outcome:
    sent: float
    seconds: float
    response: Any  # None: no answer within the client's timeout


class QueryLoad:
    """Keeps `in_flight` scene queries outstanding at all times, from clients of its own in one spinning thread,
    until closed; then lets the last ones finish. Records every query's outcome."""

    def __init__(self, in_flight: int = 3, timeout: float = 10.0, question: str = "Is there a car?",
                 target: str = f"/{NODE_NAME}") -> None:
        self.timeout = timeout
        self.question = question
        self.outcomes: list[Outcome] = []
        self._cm = isolated_node("vila_ros_test_load")
        self._node = self._cm.__enter__()
        self._clients = [self._node.create_client(QueryScene, f"{target}/query_scene", qos_profile=SERVICE_QOS)
                         for _ in range(in_flight)]
        for client in self._clients:
            if not client.wait_for_service(timeout_sec=10):
                self._cm.__exit__(None, None, None)
                raise RuntimeError("QueryScene is not available")
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
        """Stop sending, wait for the queries in flight (answered or timed out), and return every outcome."""
        self._stop.set()
        self._thread.join(self.timeout + 5)
        if self._thread.is_alive():
            raise RuntimeError("queries still pending past their timeout")
        self._executor.shutdown()
        self._cm.__exit__(None, None, None)
        return self.outcomes
