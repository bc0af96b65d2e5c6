"""The perception node as its own process, and listeners in this one, for the node tests (thin wrappers over the
package's own replay-test harness, which is what users run)."""
from __future__ import annotations

import time
from pathlib import Path

from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vila_ros.tools import replay_test
from vila_ros.tools.client import isolated_node


def start_node(log_path: Path, *ros_parameters: str):
    return replay_test.start_node(log_path, dict(p.split(":=", 1) for p in ros_parameters))


stop_node = replay_test.stop_node


class Listener(replay_test.Listener):
    """Also watches the annotated image and the description text; exposes plain message lists."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.annotated: list[Image] = []
        self.texts: list[str] = []
        qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, f"{self.node_name}/annotated_image", self.annotated.append, qos)
        self.node.create_subscription(String, f"{self.node_name}/description_text",
                                      lambda m: self.texts.append(m.data), qos)

    @property
    def description_messages(self):
        return [r.message for r in self.descriptions]

    @property
    def alert_messages(self):
        return [r.message for r in self.alerts]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()


# A node of its own context for one test's calls and publishers, torn down afterwards.
ros_helper = isolated_node
