"""One period's model work for every camera due at the same time, through the engine as one batch.

Decode is memory-bound: each token step streams all the LLM's weights, so four cameras asked one after another
(a description and an alert check each) cost eight weight streams a token, and as one batch about one. The
engine's batch also prefills each camera's frames once for all the questions asked about them
(`engine/batch.py`), and each row's answer is what a generation of its own would give. The worker's jobs then run
as before and find their answers here (`InferenceWorker._generate`); a question not answered here (asked by code
that changed since) simply gets a generation of its own. No rclpy in here.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from vila_ros.ros.frame_buffer import Frame

# What a rule question may generate (`InferenceWorker.check_alerts`); a different value there only means its
# rules get generations of their own.
RULE_MAX_NEW_TOKENS = 8

Request = tuple[str, str, int]  # camera, question, max_new_tokens


def questions(settings: Any, kind: str) -> list[tuple[str, int]]:
    """The (question, max_new_tokens) a job of `kind` ("alerts" or "describe") asks the model."""
    if kind == "describe":
        return [(settings.describe_prompt, settings.describe_max_new_tokens)]
    asked = [(settings.alert_prompt, settings.alert_max_new_tokens)] if settings.alert_categories else []
    return asked + [(rule.question, RULE_MAX_NEW_TOKENS) for rule in settings.alert_rules]


def run_batch(engine: Any, windows: dict[str, list[Frame]], requests: Sequence[Request], temperature: float,
              encode: Callable[[Sequence[Frame]], float]) -> dict[Request, tuple[Any, float]]:
    """Every request in one `generate_batch` -> {request: (GenerationResult, vision ms)}. `encode` attaches missing
    features to the frames (one call for all cameras' new frames) and returns its milliseconds."""
    from vila_ros.engine import GenerationConfig

    requests = list(dict.fromkeys(requests))
    vision_ms = encode([frame for camera in dict.fromkeys(r[0] for r in requests) for frame in windows[camera]])
    config = GenerationConfig(max_new_tokens=max(r[2] for r in requests), temperature=temperature)
    results = engine.generate_batch([r[1] for r in requests],
                                    [[frame.features for frame in windows[r[0]]] for r in requests], config,
                                    max_new_tokens=[r[2] for r in requests])
    return {request: (result, vision_ms) for request, result in zip(requests, results)}

