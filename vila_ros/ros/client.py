"""Calling vila_ros services from Python with clear failures instead of hangs."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import rclpy
from rclpy.node import Node


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


class ServiceUnavailableError(RuntimeError):
    """No server answered discovery for the service within the timeout."""


class ServiceTimeoutError(TimeoutError):
    """The server was found but did not answer in time."""


def call_service(node: Node, service_type: Any, service_name: str, request: Any, timeout_sec: float = 10.0,
                 discovery_timeout_sec: float = 5.0) -> Any:
    """Call ``service_name`` once and return its response.

    ``node`` must not be spun by another executor while this runs: the call spins it until the answer comes.
    """
    from rclpy.executors import SingleThreadedExecutor

    client = node.create_client(service_type, service_name)
    try:
        if not client.wait_for_service(timeout_sec=discovery_timeout_sec):
            raise ServiceUnavailableError(
                f"service {service_name!r} ({service_type.__name__}) is not available after "
                f"{discovery_timeout_sec:.1f} s: is the vila_ros perception node running in this ROS_DOMAIN_ID "
                "with the same ROS_AUTOMATIC_DISCOVERY_RANGE?")
        future = client.call_async(request)
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout_sec
        try:
            while not future.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    client.remove_pending_request(future)
                    raise ServiceTimeoutError(f"service {service_name!r} did not answer within {timeout_sec:.1f} s")
                executor.spin_once(timeout_sec=min(remaining, 0.1))
        finally:
            executor.remove_node(node)
            executor.shutdown()
        return future.result()
    finally:
        node.destroy_client(client)
