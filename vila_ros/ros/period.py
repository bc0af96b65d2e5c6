"""One period's model work for every camera due at the same time, through the engine as one batch.

Decode is memory-bound: each token step streams all the LLM's weights, so four cameras asked one after another
(a description and an alert check each) cost eight weight streams a token, and as one batch about one. The
engine's batch also prefills each camera's frames once for all the questions asked about them
(`engine/batch.py`), and each row's answer is what a generation of its own would give. The worker's jobs then run
as before and find their answers here (`InferenceWorker._generate`); a question not answered here (asked by code
that changed since) simply gets a generation of its own. No rclpy in here.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from vila_ros.ros.frame_buffer import CameraBuffer, Frame

log = logging.getLogger("vila_ros.worker")

# What a rule question may generate (`InferenceWorker.check_alerts`); a different value there only means its
# rules get generations of their own.
RULE_MAX_NEW_TOKENS = 8

Request = tuple[str, str, int]  # camera, question, max_new_tokens
# Fewer generations than this run one by one: a batch decodes on aten's ops, while a single row takes our one-token
# kernel step, about twice as fast (default model); from three rows on the shared weight reads and prefills win.
MIN_BATCH_ROWS = 3


def questions(settings: Any, kind: str) -> list[tuple[str, int]]:
    """The (question, max_new_tokens) a job of `kind` ("alerts" or "describe") asks the model."""
    if kind == "describe":
        return [(settings.describe_prompt, settings.describe_max_new_tokens)]
    # Alerts decided on category probabilities (alert_thresholds) generate no answer to the alert prompt.
    generated = settings.alert_categories and not getattr(settings, "alert_thresholds", None)
    asked = [(settings.alert_prompt, settings.alert_max_new_tokens)] if generated else []
    return asked + [(rule.question, RULE_MAX_NEW_TOKENS) for rule in settings.alert_rules]


def run_batch(engine: Any, windows: dict[str, list[Frame]], requests: Sequence[Request], temperature: float,
              encode: Callable[[Sequence[Frame]], float],
              regexes: dict[str, str] | None = None) -> dict[Request, tuple[Any, float]]:
    """Every request in one `generate_batch` -> {request: (GenerationResult, vision ms)}. `encode` attaches missing
    features to the frames (one call for all cameras' new frames) and returns its milliseconds; `regexes`:
    question -> the expression its answer must match (the description grammar), others free."""
    from vila_ros.engine import GenerationConfig

    requests = list(dict.fromkeys(requests))
    vision_ms = encode([frame for camera in dict.fromkeys(r[0] for r in requests) for frame in windows[camera]])
    config = GenerationConfig(max_new_tokens=max(r[2] for r in requests), temperature=temperature)
    results = engine.generate_batch([r[1] for r in requests],
                                    [[frame.features for frame in windows[r[0]]] for r in requests], config,
                                    max_new_tokens=[r[2] for r in requests],
                                    output_regexes=[(regexes or {}).get(r[1]) or None for r in requests])
    return {request: (result, vision_ms) for request, result in zip(requests, results)}



def answer_due(engine: Any, buffers: dict[str, CameraBuffer], settings: Any, due: Sequence[tuple[str, str]],
               span: Callable[[str, int], float], encode: Callable[[Sequence[Frame]], float],
               stats: Any, unasked: Callable[[str, str, list[Frame]], bool] | None = None,
               ) -> tuple[dict[str, list[Frame]], dict[Request, tuple[Any, float]]]:
    """Each due camera's window (pinned: the jobs use exactly these frames) and the answers to every due job's
    questions from one engine batch; none below MIN_BATCH_ROWS generations or when the batch failed (each job
    then runs, fails and backs off on its own). `unasked(camera, kind, window)`: a job that will not ask the model
    about this window (a description of a scene outside the model's world). `stats` (the worker's) counts batches,
    rows and model time."""
    pinned: dict[str, list[Frame]] = {}
    for camera in dict.fromkeys(camera for camera, _ in due):
        frames = buffers[camera].window(span(camera, settings.num_frames), settings.num_frames)
        if frames:
            pinned[camera] = frames

    def asked(camera: str, kind: str) -> bool:
        try:
            return unasked is None or not unasked(camera, kind, pinned[camera])
        except Exception:  # noqa: BLE001 - e.g. the encoder failing: the job meets it alone, with its own accounting
            return True

    requests = [(camera, question, limit) for camera, kind in due if camera in pinned and asked(camera, kind)
                for question, limit in questions(settings, kind)]
    if len(requests) < MIN_BATCH_ROWS or not hasattr(engine, "generate_batch"):
        return pinned, {}
    started = time.perf_counter()
    try:
        regexes = {settings.describe_prompt: settings.describe_regex}
        answers = run_batch(engine, pinned, requests, settings.temperature, encode, regexes)
    except Exception as error:  # noqa: BLE001 - then each job runs alone, with its own failure accounting
        log.warning("batch of %d generations failed, running them one by one: %r", len(requests), error)
        return pinned, {}
    finally:
        elapsed = time.perf_counter() - started
        stats.busy_s += elapsed
        stats.last_period_ms = elapsed * 1000.0
    stats.periods += 1
    stats.period_rows += len(answers)
    return pinned, answers
