"""The query service callbacks: QueryScene (a question about the cameras, answered by the model) and QueryEvents (a
search of what the node published).

QueryScene: every request gets an answer or a clear refusal, within its timeout.
- Each query waiting for the model holds a thread of the executor that spins the node, so at most
  `query_max_waiting` wait and more are refused at once as "busy": under the node's `main` (3 + query_max_waiting
  threads) the timers and the lifecycle and parameter services always find a free thread. Camera frames need none:
  they arrive on the node's own ingest thread.
- Questions that cannot be answered (empty, too long, wrong <image> count, unknown camera) are refused without
  taking a waiting slot or a model turn.
- A query still unanswered at `query_timeout_s` is answered "timed out", and the worker drops it (or stops its
  generation) instead of finishing it for no one.
- No exception leaves the callback: in rclpy one escaping a service callback ends the executor's spin, i.e. the
  node. Lifecycle transitions may swap the worker at any time, so it is read once per request.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, Callable

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from vila_ros.ros.conversion import StampError, checked_stamp_ns, ns_to_stamp
from vila_ros.ros.guard import guarded_service
from vila_ros.ros.history import History
from vila_ros.ros.worker import InferenceWorker, QueryError, SceneQuery
from vila_ros.srv import QueryEvents, QueryScene


def create_services(node: Any, scene: "SceneQueryService", events: "EventQueryService", qos_depth: int,
                    log_error: Callable[[str], None], group: Any = None) -> list[Any]:
    """~/query_scene and ~/query_events on `node`, guarded, in `group` (default: a reentrant group of their own, so
    a waiting query never blocks the other service, the timers or the lifecycle).

    They live as long as the node, answering "not configured" (and why) without a model: destroying a service
    while one of its callbacks runs makes send_response raise in the executor, which ends the node. Deep queues
    (`qos_depth`, service_qos_depth): Fast DDS keeps only `depth` unread requests (and responses) and drops the
    oldest; clients should use the same depth (README)."""
    qos = QoSProfile(depth=qos_depth, reliability=QoSReliabilityPolicy.RELIABLE)
    group = group if group is not None else ReentrantCallbackGroup()
    return [node.create_service(QueryScene, "~/query_scene", guarded_service("query_scene", scene, log_error),
                                qos_profile=qos, callback_group=group),
            node.create_service(QueryEvents, "~/query_events", guarded_service("query_events", events, log_error),
                                qos_profile=qos, callback_group=group)]


class SceneQueryService:
    def __init__(self, get_worker: Callable[[], InferenceWorker | None], parameter: Callable[[str], Any],
                 unconfigured_reason: Callable[[], str], log_error: Callable[[str], None]) -> None:
        self._get_worker = get_worker
        self._parameter = parameter
        self._unconfigured_reason = unconfigured_reason
        self._log_error = log_error
        self._lock = threading.Lock()
        self.waiting = 0

    def __call__(self, request: Any, response: Any) -> Any:
        started = time.perf_counter()
        try:
            self._answer(request, response)
        except Exception as error:  # noqa: BLE001 - see the module docstring: never let it end the spin
            self._log_error(f"QueryScene failed unexpectedly: {type(error).__name__}: {error}")
            response.success, response.error_message = False, f"internal error: {type(error).__name__}: {error}"
        response.latency_ms = (time.perf_counter() - started) * 1000.0
        return response

    def _answer(self, request: Any, response: Any) -> None:
        response.success = False
        worker = self._get_worker()
        if worker is None:
            response.error_message = self._unconfigured_reason()
            return
        question = request.question
        refusal = window_refusal(request.window_seconds)
        if refusal:
            response.error_message = refusal
            return
        if not question.strip():
            response.error_message = "the question is empty"
            return
        limit = self._parameter("query_max_question_chars")
        if len(question) > limit:
            response.error_message = (f"the question is too long: {len(question)} characters, at most {limit} "
                                      "(query_max_question_chars)")
            return
        with self._lock:
            if self.waiting >= self._parameter("query_max_waiting"):
                response.error_message = f"busy: {self.waiting} queries are waiting for the model; retry later"
                return
            self.waiting += 1
        try:
            timeout = self._parameter("query_timeout_s")
            query = SceneQuery(question, request.camera, request.window_seconds, request.window_frames,
                               request.max_new_tokens, deadline=time.monotonic() + timeout,
                               json_schema=getattr(request, "json_schema", ""))
            answer, response.error_message = wait_for_answer(worker.submit_query(query), timeout)
            if answer is None:
                return
        finally:
            with self._lock:
                self.waiting -= 1
        response.success = True
        response.answer = answer.answer
        response.frame_stamps = [ns_to_stamp(f.stamp_ns) for f in answer.frames]
        response.frame_cameras = [f.camera for f in answer.frames]


def wait_for_answer(future: Any, timeout: float) -> tuple[Any, str]:
    """The worker's answer to a submitted query, or None and why not (what the service and the action send)."""
    try:
        return future.result(timeout=timeout), ""
    except FutureTimeoutError:  # not the builtin TimeoutError before Python 3.11
        future.cancel()  # dropped if still queued; a running one stops at its deadline
        return None, f"timed out waiting for the model after {timeout:g} s"
    except QueryError as error:
        return None, str(error)
    except Exception as error:  # noqa: BLE001 - a failed inference is an answer, not a crash
        return None, f"inference failed: {type(error).__name__}: {error}"


def window_refusal(window_seconds: float) -> str:
    """Why a request's `window_seconds` is refused ("" when it is fine): a bad request, never a model failure."""
    if not math.isfinite(window_seconds) or window_seconds < 0:
        return f"window_seconds must be a finite number of seconds, at least 0: got {window_seconds!r}"
    return ""


class EventQueryService:
    """QueryEvents: descriptions and alerts of the history, by kind, time window and text; windows count back from
    `end`, or from the node's clock (`clock_ns`, so simulated time is respected) when end is zero."""

    def __init__(self, history: History, clock_ns: Callable[[], int]) -> None:
        self._history = history
        self._clock_ns = clock_ns

    def __call__(self, request: Any, response: Any) -> Any:
        try:
            refusal = window_refusal(request.window_seconds)
            if refusal:
                raise ValueError(refusal)
            start, end = checked_stamp_ns(request.start, "start"), checked_stamp_ns(request.end, "end")
            found = self._history.search(request.kind, start, end, request.window_seconds, request.text_filter,
                                         request.max_results, now_ns=self._clock_ns())
        except (StampError, ValueError) as error:
            response.success, response.error_message = False, str(error)
            return response
        response.success = True
        response.descriptions = found["descriptions"]
        response.alerts = found["alerts"]
        return response
