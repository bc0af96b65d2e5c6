"""The camera subscriptions' own node, spun by a single-threaded executor on a thread the perception node owns.

Why a node of their own: a wake-up of the lifecycle node's multi-threaded executor walks all of its ~30 entities in
Python, which at 60 frames/s took half a core and the GIL from everything else (py-spy under `vila-ros bench node`).
Why the perception node spins it itself (a thread from activate to deactivate): whoever spins the perception node
(its `main`, `rclpy.spin(node)`, a user's executor, a component container) knows nothing of a second node, and
frames would silently never arrive.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile


class IngestExecutor:
    def __init__(self, owner: Node) -> None:
        # Global arguments are not reused: a `__node:=` remap would name both nodes alike. Topics are resolved by
        # the owner (`subscribe`), so remaps of the owner apply to its cameras.
        self._owner = owner
        self.node = rclpy.create_node(f"{owner.get_name()}_ingest", namespace=owner.get_namespace(),
                                      context=owner.context, use_global_arguments=False,
                                      start_parameter_services=False)
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self.node)
        self._wake = self.node.create_guard_condition(lambda: None)  # ends a wait at once when stopping
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, message_type: type, topic: str, callback: Callable[[Any], None], qos: QoSProfile) -> Any:
        return self.node.create_subscription(message_type, self._owner.resolve_topic_name(topic), callback, qos)

    def unsubscribe(self, subscription: Any) -> None:
        self.node.destroy_subscription(subscription)

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, name="vila_ros_ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        if self.node.context.ok():
            self._wake.trigger()
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the ingest thread did not stop within {timeout:g} s")

    def destroy(self) -> None:
        self.stop()
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.node.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.5)
            except (ExternalShutdownException, ShutdownException, KeyboardInterrupt):
                return
