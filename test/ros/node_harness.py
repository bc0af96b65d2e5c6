"""Starting the perception node as its own process and talking to it over real DDS, for the node tests."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from sensor_msgs.msg import Image
from std_msgs.msg import String

from vila_ros.msg import CornerCaseAlert, SceneDescription


def start_node(log_path: Path, *ros_parameters: str, name: str = "vila_perception") -> subprocess.Popen:
    arguments = [sys.executable, "-m", "vila_ros.ros.perception_node", "--ros-args", "-r", f"__node:={name}"]
    for parameter in ros_parameters:
        arguments += ["-p", parameter]
    log = open(log_path, "w")
    return subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop_node(process: subprocess.Popen) -> int:
    process.send_signal(2)  # SIGINT: the node's clean shutdown path
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


class Listener:
    """Collects the node's outputs in the background while a test drives it."""

    def __init__(self, node_name: str = "/vila_perception") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vila_ros_test_listener", context=self.context)
        self.descriptions: list[SceneDescription] = []
        self.alerts: list[CornerCaseAlert] = []
        self.annotated: list[Image] = []
        self.texts: list[str] = []
        qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, f"{node_name}/annotated_image", self.annotated.append, qos)
        self.node.create_subscription(String, f"{node_name}/description_text", lambda m: self.texts.append(m.data),
                                      qos)
        self.node.create_subscription(SceneDescription, f"{node_name}/description", self.descriptions.append, qos)
        self.node.create_subscription(CornerCaseAlert, f"{node_name}/alerts", self.alerts.append, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def helper_node(name: str):
    """A separate context + node for service calls and publishing (not spun by the Listener's executor)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    return rclpy.create_node(name, context=context), context
