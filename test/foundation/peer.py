"""A second process for the DDS tests: `peer.py publish` sends every message type, `peer.py serve` answers both
services. It runs until killed, or until --lifetime seconds pass (so a crashed test never leaves it behind)."""
import argparse
import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy
import samples
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from vila_ros.msg import CornerCaseAlert, SceneDescription
from vila_ros.srv import QueryEvents, QueryScene

LATCHED = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["publish", "serve"])
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node(f"vila_ros_test_peer_{args.role}")
    if args.role == "publish":
        description_pub = node.create_publisher(SceneDescription, "test/descriptions", LATCHED)
        alert_pub = node.create_publisher(CornerCaseAlert, "test/alerts", LATCHED)
        for index in range(3):
            description_pub.publish(samples.scene_description(index))
            alert_pub.publish(samples.corner_case_alert(index))
    else:
        node.create_service(QueryScene, "test/query_scene",
                            lambda request, response: samples.query_scene_response(request))
        node.create_service(QueryEvents, "test/query_events",
                            lambda request, response: samples.query_events_response(request))
    print("ready", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.lifetime
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
