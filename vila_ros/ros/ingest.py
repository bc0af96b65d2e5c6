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
        self._executor: SingleThreadedExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, message_type: type, topic: str, callback: Callable[[Any], None], qos: QoSProfile,
                  raw: bool = False) -> Any:
        """`raw`: the callback gets the serialized bytes (the cameras parse them themselves, `cdr.py`)."""
        return self.node.create_subscription(message_type, self._owner.resolve_topic_name(topic), callback, qos,
                                             raw=raw)

    def unsubscribe(self, subscription: Any) -> None:
        self.node.destroy_subscription(subscription)

    def start(self) -> None:
        if self.running:
            return
        # An executor per run: stopping shuts it down, which is what wakes its wait at once.
        self._executor = SingleThreadedExecutor(context=self.node.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, args=(self._executor, self._stop), name="vila_ros_ingest",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread, executor = self._thread, self._executor
        self._thread = self._executor = None
        self._stop.set()
        if thread is not None and not self.node.context.ok():
            # After a signal shut the context down the thread's spin ends by itself: shutting its executor down
            # while it is still leaving the wait frees what that wait uses (a segfault at exit, now and then).
            thread.join(0.5)
            if not thread.is_alive():
                return
        if executor is not None:
            # Never waits on the context: rclpy destroys a context's nodes while holding its lock (try_shutdown),
            # and a shut-down executor ends its spin without asking the context whether it is still ok.
            executor.shutdown(timeout_sec=0)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"the ingest thread did not stop within {timeout:g} s")

    def destroy(self) -> None:
        self.stop()
        self.node.destroy_node()

    @staticmethod
    def _spin(executor: SingleThreadedExecutor, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                executor.spin_once()
        except (ExternalShutdownException, ShutdownException, KeyboardInterrupt):
            pass
