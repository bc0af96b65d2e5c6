"""The inference worker: one thread that owns the engine and decides what to run next.

Engines are not thread-safe and a CPU has no spare cores, so one thread runs every model call, in this order:
scene queries (a person or a planner is waiting), alert checks (safety), descriptions. Periodic work is due when
a camera's newest frame stamp has advanced by the period since the last run, so cadence follows the data (a bag
replayed at 2x gives the same number of checks per recorded second) and a slow model skips ahead to the newest
frames instead of building a backlog. Frames are encoded once and their features cached in the buffer. The jobs
of every camera due at the same time are answered by one batch through the engine (`period.py`).
A periodic job that fails (the engine raised, e.g. on NaN logits) is retried with exponential back-off per camera
and kind (`retry.py`); a failed query is answered with the error, since its caller is waiting and can retry.
No rclpy in here: the node turns the results into messages.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from vila_ros import tasks
from vila_ros.engine.errors import PromptTooLongError, RequestError
from vila_ros.ros import period
from vila_ros.ros.events import AlertUpdate, EventTracker
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.ros.retry import JobHealth, JobKey, RetryTracker
from vila_ros.ros.worker_types import (
    AlertRule,
    Description,
    QueryError,
    SceneAnswer,
    SceneQuery,
    Timings,
    WorkerSettings,
    WorkerStats,
    detected_by_probability,
    period_elapsed,
)

log = logging.getLogger("vila_ros.worker")


# The worker's types live in worker_types.py; importers keep using them from here.
__all__ = ["AlertRule", "Description", "InferenceWorker", "QueryError", "SceneAnswer", "SceneQuery", "Timings",
           "WorkerSettings", "WorkerStats"]


class InferenceWorker:
    def __init__(self, engine, buffers: dict[str, CameraBuffer], settings: WorkerSettings,
                 on_description: Callable[[Description], None], on_alert: Callable[[AlertUpdate], None],
                 tracker: EventTracker | None = None) -> None:
        self.engine = engine
        self.buffers = buffers
        self.settings = settings
        self.tracker = tracker or EventTracker()
        self.stats = WorkerStats()
        self._on_description = on_description
        self._on_alert = on_alert
        self._queries: queue.Queue[tuple[SceneQuery, Future]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_run_ns: dict[JobKey, int] = {}
        self._thread: threading.Thread | None = None
        self.retries = RetryTracker()
        # Orders submit_query against stop(): a query either enters the queue before stop() drains it, or is refused.
        self._lifecycle_lock = threading.Lock()
        # While a period runs: each due camera's window, and the batch's answers its jobs pick up (`period.py`).
        self._pinned: dict[str, list[Frame]] = {}
        self._answers: dict[period.Request, tuple[object, float]] = {}

    # ---------------------------------------------------------------------------------------------- control
    def start(self) -> None:
        with self._lifecycle_lock:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="vila_ros_inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._lifecycle_lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        while True:
            try:
                _, future = self._queries.get_nowait()
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                future.set_exception(QueryError("the perception node stopped before answering"))

    def notify(self) -> None:
        """A frame arrived: periodic work may be due."""
        self._wake.set()

    def submit_query(self, query: SceneQuery) -> Future:
        future: Future = Future()
        with self._lifecycle_lock:
            if self._thread is None:
                future.set_exception(QueryError("the perception node is not active"))
                return future
            self._queries.put((query, future))
        self._wake.set()
        return future

    def job_health(self) -> dict[JobKey, JobHealth]:
        """Failure streak and back-off of each (camera, kind) that has failed at least once."""
        return self.retries.snapshot()

    # ------------------------------------------------------------------------------------------------- loop
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._idle_wait())
            self._wake.clear()
            while not self._stop.is_set() and self._step():
                pass

    def run_due(self) -> int:
        """Run every job that is due, on the calling thread, and return how many ran. For a caller that drives the
        node's schedule itself, frame by frame (an in-process stream evaluation, faster than real time), instead
        of starting the worker thread."""
        ran = 0
        while self._step():
            ran += 1
        return ran

    def _step(self) -> bool:
        """Run the most urgent piece of work; False when nothing is due."""
        if not self._queries.empty():
            query, future = self._queries.get_nowait()
            if future.set_running_or_notify_cancel():
                self._guarded(lambda: future.set_result(self.answer(query)), future)
            return True
        settings = self.settings
        now = time.monotonic()
        due: list[JobKey] = []
        for kind, period_s in (("alerts", settings.alert_period_s), ("describe", settings.describe_period_s)):
            if period_s <= 0:
                continue
            for camera, buffer in self.buffers.items():
                newest = buffer.newest_stamp_ns()
                if newest is None or len(buffer) < settings.min_frames:
                    continue
                key = (camera, kind)
                if not self.retries.may_run(key, now):
                    continue  # backing off after failures
                if not self.retries.is_retry(key):  # a retry is due whatever the frames did meanwhile
                    if not period_elapsed(self._last_run_ns.get(key), newest, period_s):
                        continue
                self._last_run_ns[key] = newest
                due.append(key)
        if not due:
            return False
        try:
            self._batch_period(due)
            for camera, kind in due:  # alert checks first: safety before descriptions
                job = self.check_alerts if kind == "alerts" else self.describe
                self._guarded(lambda: job(camera), job=(camera, kind))
        finally:
            self._pinned, self._answers = {}, {}
        return True

    def _batch_period(self, due: list[JobKey]) -> None:
        self._pinned, self._answers = period.answer_due(
            self.engine, self.buffers, self.settings, due, self._span, self._encode_missing, self.stats,
            unasked=lambda camera, kind, frames: kind == "describe" and self._describes_unfamiliar(camera, frames))

    def _idle_wait(self) -> float:
        """How long the loop may sleep without news: until the next retry is due, at most 0.2 s."""
        retry_at = self.retries.next_retry_at()
        if retry_at is None:
            return 0.2
        return min(0.2, max(0.001, retry_at - time.monotonic()))

    def _guarded(self, work: Callable[[], object], future: Future | None = None, job: JobKey | None = None) -> None:
        started = time.perf_counter()
        try:
            work()
        except QueryError as error:  # the request's fault, not the model's: answered, not counted as a failure
            if future is not None and not future.done():
                future.set_exception(error)
        except Exception as error:
            self.stats.failures += 1
            self.stats.last_error = f"{type(error).__name__}: {error}"
            if job is not None:
                self._job_failed(job, self.stats.last_error)
            else:
                log.exception("scene query failed")
            if future is not None and not future.done():
                future.set_exception(error)
        else:
            if job is not None:
                streak = self.retries.succeeded(job)
                if streak:
                    log.warning("%s on camera %s recovered after %d failures in a row", job[1], job[0], streak)
        finally:
            self.stats.last_latency_ms = (time.perf_counter() - started) * 1000.0
            self.stats.busy_s += time.perf_counter() - started

    def _job_failed(self, job: JobKey, error: str) -> None:
        settings = self.settings
        health = self.retries.failed(job, error, time.monotonic(), settings.backoff_initial_s, settings.backoff_max_s)
        camera, kind = job
        text = (f"{kind} on camera {camera} failed ({health.consecutive_failures} in a row, "
                f"{health.failures} in all); retrying in {health.backoff_s:.2f} s: {error}")
        if health.consecutive_failures == 1:
            log.exception(text)  # the first of a streak with its traceback; the rest in one line each
        else:
            log.error(text)

    # ------------------------------------------------------------------------------------------------- jobs
    def describe(self, camera: str) -> Description:
        settings = self.settings
        frames = self._window(camera, settings.num_frames)
        if self._describes_unfamiliar(camera, frames):
            text, timings = tasks.UNFAMILIAR_SCENE, Timings(0.0, 0.0, 0.0, 0)
            self.stats.unfamiliar_descriptions += 1
        else:
            text, timings = self._generate(settings.describe_prompt, frames, settings.describe_max_new_tokens,
                                           output_regex=settings.describe_regex)
        description = Description(camera, tuple(frames), text, "describe", timings)
        self.stats.descriptions += 1
        self._on_description(description)
        return description

    def check_alerts(self, camera: str) -> list[AlertUpdate]:
        settings = self.settings
        frames = self._window(camera, settings.num_frames)
        detected: list[str] = []
        answers = []
        confidences: dict[str, float] = {}
        if settings.alert_categories and settings.alert_thresholds:
            confidences = self._category_probabilities(frames)
            detected += detected_by_probability(confidences, dict(settings.alert_thresholds), settings.alert_categories,
                                                lambda category: self.tracker.is_active(camera, category),
                                                settings.alert_release)
            answers.append(", ".join(f"{c} {confidences[c]:.2f}" for c in detected) or tasks.NO_ALERT_ANSWER)
        elif settings.alert_categories:
            text, _ = self._generate(settings.alert_prompt, frames, settings.alert_max_new_tokens)
            detected += [c for c in tasks.parse_categories(text) if c in settings.alert_categories]
            answers.append(text)
        if self._unfamiliar(frames):  # no scene to alert on; a covered or blurred lens is a fault of any view
            detected = [c for c in detected if c in tasks.LENS_FAULTS]
            answers.append(tasks.UNFAMILIAR_SCENE)
            self.stats.unfamiliar_checks += 1
        for rule in settings.alert_rules:
            text, _ = self._generate(rule.question, frames, 8)
            if tasks.parse_yes_no(text):
                detected.append(rule.category)
                answers.append(f"{rule.category}: {text}")
        categories = tuple(settings.alert_categories) + tuple(rule.category for rule in settings.alert_rules)
        stamps = [f.stamp_ns for f in frames]
        severities = {rule.category: rule.severity for rule in settings.alert_rules}
        updates = self.tracker.update(camera, categories, detected, stamps[-1], stamps, "; ".join(answers),
                                      frames[-1].frame_id, severities, confidences)
        self.stats.alert_checks += 1
        for update in updates:
            self._on_alert(update)
        return updates

    def answer(self, query: SceneQuery) -> SceneAnswer:
        if not query.question.strip() or not 0 <= query.window_seconds < float("inf"):  # the request's fault (NaN too)
            raise QueryError("the question is empty" if not query.question.strip() else
                             f"window_seconds must be a finite number of seconds, at least 0: {query.window_seconds!r}")
        if query.camera and query.camera not in self.buffers:
            raise QueryError(f"unknown camera {query.camera!r}; cameras: {', '.join(self.buffers)}")
        cameras = [query.camera] if query.camera else list(self.buffers)
        count = query.window_frames if query.window_frames > 0 else self.settings.num_frames
        per_camera = {camera: self.buffers[camera].window(query.window_seconds or self._span(camera, count), count)
                      for camera in cameras}
        per_camera = {camera: frames for camera, frames in per_camera.items() if frames}
        if not per_camera:
            raise QueryError(f"no frames received yet from {query.camera or 'any camera'}")
        question = query.question
        if len(per_camera) > 1 and "<image>" not in question:
            # Several cameras: name each group of frames, so the model (and the answer) can tell them apart.
            groups = [f"{camera}: " + "<image>" * len(frames) for camera, frames in per_camera.items()]
            question = "\n".join(groups) + "\n" + question
        frames = [frame for frames in per_camera.values() for frame in frames]
        slots = question.count("<image>")
        if slots and slots != len(frames):
            raise QueryError(f"the question holds {slots} <image> placeholders but {len(frames)} frames were "
                             "selected: leave them out, or put one per frame")
        max_new_tokens = min(query.max_new_tokens or self.settings.query_max_new_tokens,
                             self.settings.query_max_new_tokens_limit)
        try:
            text, timings = self._generate(question, frames, max_new_tokens, query.deadline, query.json_schema,
                                           query.on_token)
        except PromptTooLongError as error:
            raise QueryError(f"the question is too long for the model with {len(frames)} frames: {error}") from None
        except RequestError as error:  # e.g. an unusable JSON schema: the request's fault
            raise QueryError(str(error)) from None
        self.stats.queries += 1
        return SceneAnswer(text, tuple(frames), timings)

    # ---------------------------------------------------------------------------------------------- helpers
    def _span(self, camera: str, count: int) -> float:
        # Slack of half a frame over count frames: kept frames sit on the camera's keep-rate grid.
        return (count + 0.5) * self.buffers[camera].keep_interval_s

    def _window(self, camera: str, count: int) -> list[Frame]:
        pinned = self._pinned.get(camera)
        if pinned is not None and count == self.settings.num_frames:
            return pinned  # the window this period's batch was asked about
        frames = self.buffers[camera].window(self._span(camera, count), count)
        if not frames:
            raise QueryError(f"no frames from camera {camera!r}")
        return frames

    def _generate(self, question: str, frames: Sequence[Frame], max_new_tokens: int, deadline: float = 0.0,
                  json_schema: str = "", on_token: Callable[[int, str], bool | None] | None = None,
                  output_regex: str = "") -> tuple[str, Timings]:
        from vila_ros.engine import GenerationConfig

        if deadline and time.monotonic() > deadline:
            raise QueryError("timed out waiting for the model")
        batched = self._answers.pop((frames[0].camera, question, max_new_tokens), None) if frames else None
        if batched is not None and not (deadline or json_schema or on_token):  # periodic jobs (same output_regex)
            result, vision_ms = batched
            return result.text.strip(), Timings(vision_ms, result.prefill_ms, result.decode_ms, len(result.token_ids))
        vision_ms = self._encode_missing(frames)
        config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=self.settings.temperature,
                                  json_schema=json_schema or None, output_regex=output_regex or None)
        caller = on_token

        def on_token(token_id: int, text: str) -> bool:
            # Past the deadline the caller has been answered already: stop generating rather than finish for no one.
            cancelled = bool(caller(token_id, text)) if caller is not None else False
            return cancelled or bool(deadline and time.monotonic() > deadline)

        result = self.engine.generate(question, [frame.features for frame in frames], config, on_token=on_token)
        if result.stop_reason == "cancelled":
            if deadline and time.monotonic() > deadline:
                raise QueryError("timed out waiting for the model (generation stopped)")
            raise QueryError("cancelled by the client (generation stopped)")
        timings = Timings(vision_ms, result.prefill_ms, result.decode_ms, len(result.token_ids))
        return result.text.strip(), timings

    def _category_probabilities(self, frames: Sequence[Frame]) -> dict[str, float]:
        """The model's probability of each alert category as its reply to the alert prompt on `frames`."""
        from vila_ros.engine.answer_scores import answer_probabilities

        self._encode_missing(frames)
        categories = self.settings.alert_categories
        values = answer_probabilities(self.engine, self.settings.alert_prompt, [f.features for f in frames],
                                      categories)
        return dict(zip(categories, values))

    def _describes_unfamiliar(self, camera: str, frames: Sequence[Frame]) -> bool:
        """Whether `describe` says "An unfamiliar scene." of this window without asking the model: its newest frame
        lies outside the model's world and no lens fault explains the view."""
        return self._unfamiliar(frames) and not any(self.tracker.is_active(camera, c) for c in tasks.LENS_FAULTS)

    def _unfamiliar(self, frames: Sequence[Frame]) -> bool:
        """Whether the window's newest frame lies outside the world the model knows (`settings.world_gate`)."""
        gate = self.settings.world_gate
        if gate is None or not frames:
            return False
        self._encode_missing(frames[-1:])
        features = frames[-1].features
        if not hasattr(features, "dim") or features.dim() != 2:
            return False  # an engine without per-frame features (a remote server) has nothing to gate on
        return gate.is_unfamiliar(features)

    def _encode_missing(self, frames: Sequence[Frame]) -> float:
        missing = [frame for frame in frames if frame.features is None]
        if not missing:
            return 0.0
        started = time.perf_counter()
        features = self.engine.encode_frames([frame.rgb for frame in missing])
        for frame, feature in zip(missing, features):
            self.buffers[frame.camera].attach_features(frame, feature)
        return (time.perf_counter() - started) * 1000.0
