"""Every callback the executors run (services, timers, subscriptions, parameter callbacks, lifecycle transitions)
goes through a guard here: in rclpy an exception escaping a callback ends the executor's spin, i.e. the node (or,
on the ingest thread, silently every camera). A guarded callback that raises unexpectedly is logged with its
traceback and, where the caller waits for a response, answered as an internal error; the node stays up.

`VILA_ROS_INJECT_FAULT` (comma-separated guard names, or `all`) makes the named guards raise `InjectedFault` before
running their callback: how the tests prove that each guard holds in a real node process. Unset, it costs one set
lookup per call.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import traceback
from typing import Any, Callable

from rclpy.lifecycle import TransitionCallbackReturn

log = logging.getLogger("vila_ros.guard")
INJECT_ENV = "VILA_ROS_INJECT_FAULT"


class InjectedFault(RuntimeError):
    """Raised by a guard named in VILA_ROS_INJECT_FAULT (tests only)."""


def _injected() -> frozenset[str]:
    return frozenset(name.strip() for name in os.environ.get(INJECT_ENV, "").split(",") if name.strip())


_INJECTED = _injected()


def _maybe_inject(name: str) -> None:
    if _INJECTED and (name in _INJECTED or "all" in _INJECTED):
        raise InjectedFault(f"fault injected into {name} ({INJECT_ENV})")


_LOG_PERIOD_S = 5.0  # a bug hit by every frame must not flood the log: one traceback per guard this often
_last_logged: dict[str, tuple[float, int]] = {}  # guard name -> (when a traceback was last logged, errors since)
_log_lock = threading.Lock()


def report(name: str, error: BaseException, log_error: Callable[[str], None] | None = None) -> str:
    """Log `error` of guard `name` with its traceback (throttled per guard); the one-line text that answers a
    caller."""
    text = f"internal error in {name}: {type(error).__name__}: {error}"
    now = time.monotonic()
    with _log_lock:
        last, suppressed = _last_logged.get(name, (-_LOG_PERIOD_S, 0))
        if now - last < _LOG_PERIOD_S:
            _last_logged[name] = (last, suppressed + 1)
            return text
        _last_logged[name] = (now, 0)
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    (log_error or log.error)(f"{text}{more}; the node carries on\n{trace}")
    return text


def guarded(name: str, callback: Callable[..., Any], on_error: Callable[[str], Any] | None = None,
            log_error: Callable[[str], None] | None = None) -> Callable[..., Any]:
    """`callback` that never raises: an exception is logged (with traceback) and `on_error(text)` is returned
    instead (None without it)."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            _maybe_inject(name)
            return callback(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the point of the guard: nothing may end the executor's spin
            text = report(name, error, log_error)
            return on_error(text) if on_error is not None else None

    return run


def guarded_service(name: str, callback: Callable[[Any, Any], Any],
                    log_error: Callable[[str], None] | None = None) -> Callable[[Any, Any], Any]:
    """A service callback (request, response) whose unexpected exception is answered `success: false` with
    `error_message: internal error ...` (every vila_ros service response has both fields)."""

    @functools.wraps(callback)
    def run(request: Any, response: Any) -> Any:
        try:
            _maybe_inject(name)
            return callback(request, response)
        except Exception as error:  # noqa: BLE001 - see the module docstring
            text = report(name, error, log_error)
            response.success, response.error_message = False, text
            return response

    return run


def guarded_transition(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator of a lifecycle transition method: an unexpected exception is logged with its traceback (rclpy
    would swallow it silently) and the transition returns ERROR, which leads to the node's `on_error`."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def run(node: Any, state: Any) -> Any:
            try:
                _maybe_inject(name)
                return method(node, state)
            except Exception as error:  # noqa: BLE001 - see the module docstring
                report(name, error, node.get_logger().error)
                return TransitionCallbackReturn.ERROR

        return run

    return decorate


class Throttled:
    """`log(text)` at most once per `period_s` per key: `throttled(key, text)`."""

    def __init__(self, log: Callable[[str], None], period_s: float = 5.0) -> None:
        self._log = log
        self._period_s = period_s
        self._last: dict[str, float] = {}

    def __call__(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self._period_s) >= self._period_s:
            self._last[key] = now
            self._log(text)
