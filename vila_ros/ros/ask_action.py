"""The AskScene action: a long question answered with the partial answer streamed as feedback, cancellable.

It goes through the worker's query path (the same refusals, window and model turn as QueryScene), with the engine's
token callback publishing feedback and turning a cancel request into a stop at the next token step. Goals share the
services' waiting limit (`query_max_waiting`): each running goal holds an executor thread, like a waiting query.
A client that disappears mid-goal costs nothing more than its goal: generation finishes (or stops at
`query_timeout_s`) and the result is kept for nobody, as rclpy does for every goal.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from vila_ros.action import AskScene
from vila_ros.ros.conversion import ns_to_stamp
from vila_ros.ros.guard import guarded
from vila_ros.ros.query_service import wait_for_answer
from vila_ros.ros.worker import InferenceWorker, SceneQuery


class AskSceneAction:
    def __init__(self, node: Any, get_worker: Callable[[], InferenceWorker | None], parameter: Callable[[str], Any],
                 unconfigured_reason: Callable[[], str], callback_group: Any) -> None:
        self._get_worker = get_worker
        self._parameter = parameter
        self._unconfigured_reason = unconfigured_reason
        self._log_error = node.get_logger().error
        self._lock = threading.Lock()
        self.running = 0
        self.server = ActionServer(node, AskScene, "~/ask_scene", execute_callback=self._execute,
                                   goal_callback=guarded("ask_scene_goal", self._on_goal,
                                                         lambda _text: GoalResponse.REJECT, self._log_error),
                                   cancel_callback=lambda _goal: CancelResponse.ACCEPT,
                                   callback_group=callback_group)
        # An unexpected exception is logged with its traceback and comes back as the text that answers the goal.
        self._guarded_answer = guarded("ask_scene", self._answer, lambda text: text, self._log_error)

    def _on_goal(self, goal: Any) -> GoalResponse:
        # Refusals here reach the client at once; the ones that need the worker come back as a failed result.
        with self._lock:
            if self.running >= self._parameter("query_max_waiting"):
                return GoalResponse.REJECT
            self.running += 1
        return GoalResponse.ACCEPT

    def _execute(self, goal_handle: Any) -> Any:
        started = time.perf_counter()
        result = AskScene.Result()
        try:
            internal_error = self._guarded_answer(goal_handle, result)
            if internal_error is not None:
                result.success, result.error_message = False, internal_error
        finally:
            with self._lock:
                self.running -= 1
        result.latency_ms = (time.perf_counter() - started) * 1000.0
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _answer(self, goal_handle: Any, result: Any) -> None:
        goal = goal_handle.request
        result.success = False
        worker = self._get_worker()
        if worker is None:
            result.error_message = self._unconfigured_reason()
            return
        limit = self._parameter("query_max_question_chars")
        if not goal.question.strip() or len(goal.question) > limit:
            result.error_message = ("the question is empty" if not goal.question.strip() else
                                    f"the question is too long: {len(goal.question)} characters, at most {limit} "
                                    "(query_max_question_chars)")
            return
        partial: list[str] = []
        count = [0]

        def on_token(token_id: int, text: str) -> bool:
            if token_id >= 0:
                count[0] += 1
            if text:
                partial.append(text)
                goal_handle.publish_feedback(AskScene.Feedback(partial_answer="".join(partial),
                                                               generated_tokens=count[0]))
            return goal_handle.is_cancel_requested or not goal_handle.is_active

        timeout = self._parameter("query_timeout_s")
        query = SceneQuery(goal.question, goal.camera, goal.window_seconds, goal.window_frames, goal.max_new_tokens,
                           deadline=time.monotonic() + timeout, json_schema=goal.json_schema, on_token=on_token)
        answer, result.error_message = wait_for_answer(worker.submit_query(query), timeout)
        result.answer = "".join(partial).strip()  # what was streamed, also when cancelled
        if answer is None:
            return
        result.success = True
        result.answer = answer.answer
        result.frame_stamps = [ns_to_stamp(f.stamp_ns) for f in answer.frames]
        result.frame_cameras = [f.camera for f in answer.frames]
        timings = answer.timings
        result.vision_ms, result.prefill_ms, result.decode_ms = timings.vision_ms, timings.prefill_ms, timings.decode_ms
        result.generated_tokens = timings.generated_tokens
