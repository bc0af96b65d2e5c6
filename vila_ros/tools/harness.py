"""The perception node as a process of its own, exactly as deployed, and what starts and watches it over DDS from
this process: one harness for `vila-ros replay-test` / `soak` / `demo`, `vila-ros bench node` and the tests.

- `start_node` / `stop_node` / `wait_for_node`, or `running_node` (all three, with checks of a clean exit);
- `Listener`: the node's descriptions, alerts (and optionally annotated image and description text) and latest
  /diagnostics, in a context and executor thread of its own; `Diagnostics`: every /diagnostics array over time;
- `isolated_node`: a node in a context of its own for one job's calls and publishers.

Driving a running node (parameters, lifecycle, a synthetic camera, query load) is in `vila_ros.tools.drivers`.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from vila_ros.msg import CornerCaseAlert, SceneDescription
from vila_ros.ros.diagnostics import local_status_name
from vila_ros.tools.scoring import Received

NODE_NAME = "vila_perception"


class NodeProcessError(RuntimeError):
    """The node process did not come up, died, exited uncleanly or logged a traceback."""


@contextlib.contextmanager
def isolated_node(name: str) -> Iterator[Node]:
    """A node in a context of its own (so it can be spun apart from any other), torn down on exit."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        context.try_shutdown()


def use_dds_profile(choice: str | None = None) -> str:
    """Set the Fast DDS profile this process (before its first rclpy.init) and every child (node, cameras) start
    with; returns it ('' = built-in). None: $FASTDDS_DEFAULT_PROFILES_FILE when set, else the shipped profile with
    a shared-memory segment large enough for raw camera frames (with Fast DDS's defaults most frames over 512 KiB
    are lost between processes)."""
    from vila_ros.resources import LOCAL_LARGE_FRAMES_DDS_PROFILE, shipped_config

    if choice is None:
        choice = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or str(shipped_config(LOCAL_LARGE_FRAMES_DDS_PROFILE))
    if choice:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = choice
    else:
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return choice


def start_node(log_path: Path, parameters: dict[str, str], name: str = NODE_NAME) -> subprocess.Popen:
    """`python -m vila_ros.ros.perception_node` named `name` with `-p key:=value` per parameter; output to log_path."""
    arguments = [sys.executable, "-m", "vila_ros.ros.perception_node", "--ros-args", "-r", f"__node:={name}"]
    for key, value in parameters.items():
        arguments += ["-p", f"{key}:={value}"]
    return subprocess.Popen(arguments, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGINT (the node's clean shutdown path), then its exit code; -9 when it had to be killed."""
    process.send_signal(2)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


@dataclass
class Listener:
    """Subscribes to a perception node's outputs and to /diagnostics in the background (its own context and
    executor thread). With `watch_annotated`, also to its annotated image and description text."""

    node_name: str = f"/{NODE_NAME}"
    watch_annotated: bool = False
    descriptions: list[Received] = field(default_factory=list)
    alerts: list[Received] = field(default_factory=list)
    annotated: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vila_ros_listener", context=self.context)
        reliable = QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(SceneDescription, f"{self.node_name}/description",
                                      lambda m: self._on(self.descriptions, m), reliable)
        self.node.create_subscription(CornerCaseAlert, f"{self.node_name}/alerts",
                                      lambda m: self._on(self.alerts, m), latched)
        if self.watch_annotated:
            from sensor_msgs.msg import Image
            from std_msgs.msg import String

            qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
            self.node.create_subscription(Image, f"{self.node_name}/annotated_image", self.annotated.append, qos)
            self.node.create_subscription(String, f"{self.node_name}/description_text",
                                          lambda m: self.texts.append(m.data), qos)
        self._diagnostics: dict[str, dict[str, str]] = {}
        self._diagnostics_lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.callbacks: list[Callable[[Any], None]] = []
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on(self, into: list, message) -> None:
        into.append(Received(message, time.monotonic()))
        for callback in self.callbacks:
            callback(message)

    def _on_diagnostics(self, array) -> None:
        with self._diagnostics_lock:
            for status in array.status:
                name = local_status_name(status.name, self.node_name)
                if name is not None:  # statuses of other nodes on /diagnostics are not ours
                    self._diagnostics[name] = {kv.key: kv.value for kv in status.values}

    @property
    def description_messages(self) -> list[SceneDescription]:
        return [r.message for r in self.descriptions]

    @property
    def alert_messages(self) -> list[CornerCaseAlert]:
        return [r.message for r in self.alerts]

    def latest_diagnostics(self) -> dict[str, dict[str, str]]:
        """The latest key -> value of each of the node's /diagnostics statuses, by local name ("camera front",
        "inference", ...; a copy)."""
        with self._diagnostics_lock:
            return {name: dict(values) for name, values in self._diagnostics.items()}

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> bool:
        """Whether `predicate()` holds within `timeout` s (checked every 0.1 s, and once more at the end)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return bool(predicate())

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_node(self, timeout: float) -> bool:
        """Whether the node reaches the lifecycle state *active* within `timeout` s. (Its services exist from
        start-up, answering "not configured", so their presence says nothing about the model being loaded.)"""
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + timeout
        client = self.node.create_client(GetState, f"{self.node_name}/get_state")
        try:
            while time.monotonic() < deadline:
                if not client.wait_for_service(timeout_sec=max(0.0, min(1.0, deadline - time.monotonic()))):
                    continue
                future = client.call_async(GetState.Request())  # answered through the background executor
                while not future.done() and time.monotonic() < deadline:
                    time.sleep(0.02)
                if future.done() and future.result().current_state.label == "active":
                    return True
                client.remove_pending_request(future)
                time.sleep(0.1)
            return False
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_for_node(listener: Listener, process: subprocess.Popen, timeout: float) -> bool:
    """Whether the node becomes active within `timeout` s; False as soon as its process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if listener.wait_for_node(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
            return True
    return False


def log_tail(log_path: Path, characters: int = 3000) -> str:
    return log_path.read_text(errors="replace")[-characters:] if log_path.is_file() else ""


@contextlib.contextmanager
def running_node(log_dir: Path, parameters: dict[str, str], ready_timeout: float = 60.0, wait_ready: bool = True,
                 allow_tracebacks: bool = False, name: str = NODE_NAME,
                 watch_annotated: bool = False) -> Iterator[tuple[subprocess.Popen, Listener, Path]]:
    """The node `name` as its own process (event log and no stale alerts unless `parameters` say otherwise), with
    a listener; yields (process, listener, log path). Raises NodeProcessError when it does not become active
    (with `wait_ready`), when it died inside the block, or when it then stops with an exit code other than 0 or,
    unless `allow_tracebacks`, after logging a traceback."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "node.log"
    params = {"event_log_path": str(log_dir / "alerts.jsonl"), "stale_after_s": "0.0", **parameters}
    process = start_node(log, params, name=name)
    listener = Listener(node_name="/" + name, watch_annotated=watch_annotated)
    try:
        if wait_ready and not listener.wait_for_node(ready_timeout):
            raise NodeProcessError(f"the node did not become active within {ready_timeout} s:\n{log_tail(log)}")
        yield process, listener, log
        if process.poll() is not None:
            raise NodeProcessError(f"the node died:\n{log_tail(log)}")
    finally:
        listener.close()
        code = stop_node(process)
    if code != 0:
        raise NodeProcessError(f"the node exited with {code}:\n{log_tail(log)}")
    if not allow_tracebacks and "Traceback" in log.read_text(errors="replace"):
        raise NodeProcessError(f"the node logged a traceback:\n{log_tail(log)}")


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

    def wait_for(self, status_name: str, predicate: Callable[[dict[str, str], Any], bool], timeout: float,
                 since: float = 0.0) -> tuple[float, dict[str, str], Any] | None:
        """The first (arrival, values, status) after `since` that satisfies `predicate(values, status)`."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.values(status_name, since):
                if predicate(entry[1], entry[2]):
                    return entry
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
