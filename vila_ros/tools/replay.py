"""Replay a rosbag2 recording (mcap or sqlite3) into the ROS graph, without the ros2 bag tools.

Messages are published as the recorded CDR bytes (no deserialization), paced by their recorded receive times
scaled by `rate` (0 = as fast as possible), optionally looped. Header stamps stay as recorded, so what the node
publishes can be compared with the bag's ground truth.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vila_ros.tasks import NANOSECONDS

# rclpy and rosbags are imported where a replay starts: `vila-ros --help` reads this module's arguments.
if TYPE_CHECKING:
    from rclpy.node import Node

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@dataclass
class ReplayStats:
    published: int = 0
    duration_s: float = 0.0


def message_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the rclpy class; a clear error when its package is not installed."""
    package, kind, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot publish {type_name}: its Python interface is not installed ({error})") from error


def replay_bag(node: Node, bag: str | Path, rate: float = 1.0, topics: list[str] | None = None,
               remap: dict[str, str] | None = None, loop: bool = False,
               stop: threading.Event | None = None, clock: bool = False,
               on_publish: Callable[[str, int], None] | None = None) -> ReplayStats:
    """Publish the bag's messages; with `clock`, also /clock at the recorded times (for use_sim_time nodes).

    `on_publish(topic, recorded_ns)` is called right after each message goes out (used to measure latency).
    """
    from builtin_interfaces.msg import Time
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from rosbags.rosbag2 import Reader
    from rosgraph_msgs.msg import Clock

    if rate < 0:
        raise ValueError("rate must be >= 0")
    replay_qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    clock_qos = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT)
    remap = remap or {}
    stop = stop or threading.Event()
    stats = ReplayStats()
    started = time.monotonic()
    with Reader(Path(bag)) as reader:
        connections = [c for c in reader.connections if not topics or c.topic in topics]
        if not connections:
            available = ", ".join(sorted({c.topic for c in reader.connections}))
            raise ValueError(f"no matching topics in {bag}; it holds: {available}")
        publishers = {}
        for connection in connections:
            topic = remap.get(connection.topic, connection.topic)
            if topic not in publishers:
                publishers[topic] = node.create_publisher(message_class(connection.msgtype), topic, replay_qos)
        clock_publisher = node.create_publisher(Clock, "/clock", clock_qos) if clock else None
        _wait_for_subscribers(publishers.values(), stop)
        while not stop.is_set():
            pass_start = time.monotonic()
            first_ns = None
            for connection, timestamp, raw in reader.messages(connections=connections):
                if stop.is_set():
                    break
                first_ns = timestamp if first_ns is None else first_ns
                if rate > 0:
                    delay = (timestamp - first_ns) / NANOSECONDS / rate - (time.monotonic() - pass_start)
                    if delay > 0 and stop.wait(delay):
                        break
                if clock_publisher is not None:
                    clock_publisher.publish(Clock(clock=Time(sec=timestamp // 10**9, nanosec=timestamp % 10**9)))
                topic = remap.get(connection.topic, connection.topic)
                publishers[topic].publish(bytes(raw))
                stats.published += 1
                if on_publish is not None:
                    on_publish(topic, timestamp)
            if not loop:
                break
    stats.duration_s = time.monotonic() - started
    return stats


def _wait_for_subscribers(publishers, stop: threading.Event, timeout_s: float = 2.0) -> None:
    # Discovery takes a moment: without this, the first frames of a short bag go to nobody.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if all(p.get_subscription_count() > 0 for p in publishers):
            return
        time.sleep(0.05)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `vila-ros replay` and `replay_node`."""
    parser.add_argument("bag", help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor; 0 = as fast as possible")
    parser.add_argument("--topics", nargs="*", help="only these topics")
    parser.add_argument("--remap", nargs="*", default=[], metavar="FROM:=TO", help="publish FROM under TO")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--clock", action="store_true", help="publish /clock at the recorded times "
                                                             "(for nodes with use_sim_time:=true)")


def run(args: argparse.Namespace) -> int:
    import rclpy

    remap = {}
    for item in args.remap:
        if ":=" not in item:
            print(f"replay: --remap expects FROM:=TO, got {item!r}", file=sys.stderr)
            return 2
        source, target = item.split(":=", 1)
        remap[source] = target
    rclpy.init()
    node = rclpy.create_node("vila_ros_replay")
    try:
        stats = replay_bag(node, args.bag, args.rate, args.topics, remap, args.loop, clock=args.clock)
        print(f"replayed {stats.published} messages in {stats.duration_s:.1f} s")
    except (ValueError, FileNotFoundError) as error:
        print(f"replay: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`replay_node`: `vila-ros replay` as a ROS program (ROS arguments are ignored)."""
    import rclpy

    parser = argparse.ArgumentParser(prog="replay_node", description=__doc__.splitlines()[0])
    add_replay_arguments(parser)
    return run(parser.parse_args(rclpy.utilities.remove_ros_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
