"""Engine failures callers can tell apart: the model's fault (retry later, report) vs the request's (refuse it).

No torch import: the ROS layer catches these without loading the ML stack.
"""
from __future__ import annotations


class EngineError(RuntimeError):
    """Base of the errors an engine raises on purpose."""


class NonFiniteOutputError(EngineError):
    """The model produced NaN or inf (logits or image features). Greedy decoding would otherwise turn NaN logits
    into a silent stream of token 0, so it is raised instead; the usual causes are corrupt weights, an overflow in
    a low precision, or a faulty accelerator."""

    def __init__(self, what: str, model_id: str, step: str) -> None:
        super().__init__(f"non-finite {what} (NaN/inf) from model {model_id!r} at {step}: check the checkpoint's "
                         "weights and the precision")
        self.what = what
        self.model_id = model_id
        self.step = step


class PromptTooLongError(EngineError, ValueError):
    """The prompt (text and image tokens) does not fit the model's context: the request's fault, not the model's.
    Also a ValueError, which is what callers caught before this type existed."""

    def __init__(self, positions: int, max_positions: int) -> None:
        super().__init__(f"prompt of {positions} positions exceeds the model's {max_positions}")
        self.positions = positions
        self.max_positions = max_positions


class RequestError(EngineError, ValueError):
    """The request cannot be served as asked (e.g. an unusable JSON schema): the caller's fault, refused with the
    reason and never counted as a model failure."""
