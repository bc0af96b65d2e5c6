"""Scenario state: the event, and what the world is at time ``t`` (light state, camera effect), without pixels.

``World`` holds a scenario's seed, family, duration, parameters (``params``: camera, weather, time, sign, light, ...),
its actors and its one ``Event`` (or none), and answers state questions about any ``t``: when the event starts,
the traffic light's colour, how far a camera effect has gone. ``Scenario`` (``vila_ros.sim.scenario``) adds
rendering and ground truth on top. Every time accepted is ``t >= 0``; after ``duration`` the world holds its state.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Self

from vila_ros.sim.actors import Actor
from vila_ros.sim.camera import Camera

SCENARIO_DURATION = 10.0  # seconds; render() accepts any t >= 0 (the world holds its last state)


@dataclass
class Event:
    category: str
    start: float
    end: float  # math.inf for states that persist (camera_blocked, camera_blurred)
    severity: int = 0

    def to_dict(self) -> dict:
        return {"category": self.category, "severity": self.severity, "start": self.start,
                "end": None if math.isinf(self.end) else self.end}


class World:
    """A scenario's state over time (see module docstring)."""

    def __init__(self, seed: int, family: str, duration: float, params: dict, actors: list[Actor],
                 event: Event | None):
        self.seed, self.family, self.duration = seed, family, duration
        self.params, self.actors, self.event = params, actors, event
        self._cache: dict = {}  # per image size: what does not change with t (backgrounds, fog)

    @property
    def event_start(self) -> float:
        return self.event.start if self.event is not None else math.inf

    def without_event(self) -> Self:
        """The same world in which the event never starts (its actor stays in its distractor start state)."""
        other = copy.copy(self)
        other.event = None
        other._cache = {}
        return other

    def light_state(self, t: float) -> str:
        initial = self.params.get("light", "none")
        if initial == "none":
            return "none"
        if self.event is not None and self.event.category == "red_light" and t >= self.event.start:
            return "yellow" if t < self.event.start + 0.6 else "red"
        return initial

    def effect_level(self, t: float) -> tuple[str | None, float]:
        if self.event is None or self.event.category not in ("camera_blocked", "camera_blurred"):
            return None, 0.0
        level = 0.0 if t < self.event.start else min(1.0, (t - self.event.start) / 1.0)
        return self.event.category, level

    def camera(self, width: int, height: int) -> Camera:
        """The scenario's camera at one image size."""
        return Camera.for_params(self.params, width, height)

    def describe(self) -> dict:
        return {"seed": self.seed, "family": self.family, "duration": self.duration,
                "params": {k: (list(v) if isinstance(v, (tuple, set, frozenset)) else v) for k, v in self.params.items()
                           if k != "gaps"},
                "event": self.event.to_dict() if self.event else None,
                "actors": [{"kind": a.kind, "event_actor": a.is_event_actor} for a in self.actors]}
