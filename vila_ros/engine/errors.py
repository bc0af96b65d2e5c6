"""Engine failures callers can tell apart: the model's fault (retry later, report) vs the request's (refuse it).

No torch import: the ROS layer catches these without loading the ML stack.
"""
from __future__ import annotations

from typing import Any, Sequence


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


def refuse_constraints(engine: str, config: Any, output_regexes: Sequence[str | None] | None = None,
                       json_schema: bool = False) -> None:
    """RequestError when a request asks `engine` for a constraint it cannot apply (an output_regex; a JSON schema
    too unless `json_schema`): answering unconstrained would break the contract (engine/types.py)."""
    if not json_schema and getattr(config, "json_schema", None):
        raise RequestError(f"engine {engine} cannot constrain decoding to a json_schema")
    if getattr(config, "output_regex", None) or any(output_regexes or ()):
        raise RequestError(f"engine {engine} cannot constrain decoding to an output_regex"
                           + (" (the OpenAI protocol has no regular expressions; json_schema it has)"
                              if json_schema else ""))


class RemoteEngineError(EngineError):
    """A remote (OpenAI-protocol) server failed: unreachable, timed out, answered 5xx/429 or something that is not
    a chat completion. The model's side, so callers retry with back-off and report it. ``status`` is the HTTP
    status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteRequestError(RemoteEngineError, RequestError):
    """The server refused the request itself (HTTP 4xx other than 408/409/429): retrying the same request will not
    help; a RequestError (and a ValueError), like an unusable schema."""
