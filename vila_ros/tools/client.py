"""Calling vila_ros services from Python with clear failures instead of hangs."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

# Measured with Fast DDS (Kilted): a service's responses reach every client of that service, and each client keeps
# only `depth` unread ones (10 by default); among more than 10 concurrent callers, a client can lose its own
# response to the others' and wait forever. The node's services use the same depth (`service_qos_depth`).
SERVICE_QOS = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)


class ServiceUnavailableError(RuntimeError):
    """No server answered discovery for the service within the timeout."""


class ServiceTimeoutError(TimeoutError):
    """The server was found but did not answer in time."""


def call_service(node: Node, service_type: Any, service_name: str, request: Any, timeout_sec: float = 10.0,
                 discovery_timeout_sec: float = 5.0, qos: QoSProfile = SERVICE_QOS,
                 resend_every_sec: float | None = None) -> Any:
    """Call ``service_name`` and return its response.

    ``resend_every_sec``: for cheap, read-only services only: send the request again whenever no answer has come
    for this long, and take the first answer. Fast DDS drops a response when the server has not yet discovered the
    client's response reader 100 ms after the request (rmw_fastrtps waits that long), which a loaded machine can
    exceed right after ``wait_for_service``; the one request is then never answered. Never use it on the model's
    queries: a resent question only lands on a busy model.

    ``node`` must not be spun by another executor while this runs: the call spins it until the answer comes. So
    never call this from several threads on one node (each call's executor would take the node from the others';
    use `call_concurrently`).
    """
    from rclpy.executors import SingleThreadedExecutor

    client = node.create_client(service_type, service_name, qos_profile=qos)
    try:
        if not client.wait_for_service(timeout_sec=discovery_timeout_sec):
            raise ServiceUnavailableError(
                f"service {service_name!r} ({service_type.__name__}) is not available after "
                f"{discovery_timeout_sec:.1f} s: is the vila_ros perception node running in this ROS_DOMAIN_ID "
                "with the same ROS_AUTOMATIC_DISCOVERY_RANGE?")
        futures = [client.call_async(request)]
        last_sent = time.monotonic()
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout_sec
        try:
            while not any(future.done() for future in futures):
                now = time.monotonic()
                if now >= deadline:
                    raise ServiceTimeoutError(f"service {service_name!r} did not answer within {timeout_sec:.1f} s")
                if resend_every_sec is not None and now - last_sent >= resend_every_sec:
                    futures.append(client.call_async(request))
                    last_sent = now
                executor.spin_once(timeout_sec=min(deadline - now, 0.1))
        finally:
            for future in futures:
                if not future.done():
                    client.remove_pending_request(future)
            executor.remove_node(node)
            executor.shutdown()
        return next(future for future in futures if future.done()).result()
    finally:
        node.destroy_client(client)


@dataclass
class CallOutcome:
    response: Any = None  # None when the call failed
    error: Exception | None = None  # ServiceTimeoutError when no answer came in time
    seconds: float = 0.0  # from sending the request to its answer (or to giving up)


def call_concurrently(node: Node, service_type: Any, service_name: str, requests: Sequence[Any],
                      timeout_sec: float = 10.0, discovery_timeout_sec: float = 5.0,
                      qos: QoSProfile = SERVICE_QOS) -> list[CallOutcome]:
    """Send every request at once, each from its own client (as independent callers would), and spin one
    executor until each is answered or its `timeout_sec` has passed. Outcomes come in the order of `requests`."""
    from rclpy.executors import SingleThreadedExecutor

    clients = [node.create_client(service_type, service_name, qos_profile=qos) for _ in requests]
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + discovery_timeout_sec
        for client in clients:
            if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
                raise ServiceUnavailableError(f"service {service_name!r} is not available after "
                                              f"{discovery_timeout_sec:.1f} s")
        sent = time.monotonic()
        futures = [client.call_async(request) for client, request in zip(clients, requests)]
        outcomes = [CallOutcome() for _ in requests]
        pending = set(range(len(futures)))
        while pending:
            now = time.monotonic()
            for index in list(pending):
                if futures[index].done():
                    outcomes[index] = CallOutcome(futures[index].result(), None, now - sent)
                    pending.discard(index)
                elif now - sent > timeout_sec:
                    clients[index].remove_pending_request(futures[index])
                    outcomes[index] = CallOutcome(None, ServiceTimeoutError(
                        f"service {service_name!r} did not answer within {timeout_sec:.1f} s"), now - sent)
                    pending.discard(index)
            if pending:
                executor.spin_once(timeout_sec=0.02)
        return outcomes
    finally:
        executor.remove_node(node)
        executor.shutdown()
        for client in clients:
            node.destroy_client(client)
