"""Scenario: a world that can be rendered at any time ``t`` (seconds) and any image size, with its ground truth.

``render`` composes the frame: the cached static background, lane markings and the traffic light, the actors far to
near, weather, then what a blocked or blurred camera does. A render at any size, squashed to a square, matches the
square render. State comes from ``World`` (``vila_ros.sim.world``), painting from ``paint_world`` and
``paint_actors``, truth (``truth``, ``events_in``, ``attributes``, ``in_sight``, ``frame_labels``) from
``vila_ros.sim.truth``. ``without_event()`` is the same world with an event that never starts: its actor stays a
distractor, so it renders like the scenario up to the start.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vila_ros.sim import paint_world
from vila_ros.sim import truth as sim_truth
from vila_ros.sim.actors import Actor
from vila_ros.sim.camera import Camera
from vila_ros.sim.paint_actors import draw_actor
from vila_ros.sim.truth import Truth
from vila_ros.sim.world import Event, World


class Scenario(World):
    """A world that can be rendered and told the truth about (see module docstring)."""

    def __init__(self, seed: int, family: str, duration: float, params: dict, actors: list[Actor],
                 event: Event | None, rng: np.random.Generator):
        super().__init__(seed, family, duration, params, actors, event)
        # rain streaks (normalised positions), fixed by seed
        self._rain = rng.random((48, 2)) if params.get("weather") == "rain" else None

    # -------------------------------------------------------------------------------------------------- render
    def render(self, t: float, width: int = 112, height: int = 112) -> np.ndarray:
        """The camera frame at time ``t`` seconds: ``height x width x 3`` uint8 RGB."""
        bg, cam = self._background(width, height)
        img = bg.copy()
        es = self.event_start
        night = self.params.get("time") == "night"
        shade = 0.65 if night else (0.6 if self.params.get("lighting") == "dim" else 1.0)
        if self.family == "road":
            paint_world.road_markings(img, cam, self.params, t, self.light_state(t), night)
        drawn = []
        for actor in self.actors:
            if actor.visible(t, es):
                x, y, z, moving = actor.position(t, es)
                drawn.append((z, actor, x, y, moving))
        drawn.sort(key=lambda item: -item[0])
        for z, actor, x, y, moving in drawn:
            draw_actor(img, cam, actor, x, y, z, moving, t, shade, night)
        weather = self.params.get("weather")
        if weather == "rain":
            paint_world.draw_rain(img, self._rain, t)
        elif weather == "fog":
            fog, alpha = self._fog(width, height)
            img = (img * (1.0 - alpha) + fog).astype(np.uint8)
        effect, level = self.effect_level(t)
        return paint_world.camera_effect(img, effect, level, self.params.get("occluder"))

    def _background(self, width: int, height: int) -> tuple[np.ndarray, Camera]:
        key = (width, height)
        if key not in self._cache:
            self._cache[key] = paint_world.background(self.family, self.params, self.seed, width, height)
        return self._cache[key]

    def _fog(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        key = ("fog", width, height)
        if key not in self._cache:
            self._cache[key] = paint_world.fog_layer(self.params["horizon"], width, height)
        return self._cache[key]

    # --------------------------------------------------------------------------------------------------- truth
    def truth(self, stamps: Sequence[float]) -> Truth:
        """Ground truth of the frames at ``stamps`` (a clip, or one frame)."""
        return sim_truth.window_truth(self, stamps)

    def events_in(self, stamps: Sequence[float]) -> list[dict]:
        """Events visible in a window of frame times: some frame >= start + MIN_VISIBLE and the first <= end."""
        return sim_truth.events_in(self, stamps)

    def attributes(self, stamps: Sequence[float], events: list[dict] | None = None) -> dict:
        """Caption attributes of the frames at ``stamps`` (see ``vila_ros.sim.truth.attributes``)."""
        return sim_truth.attributes(self, stamps, events)

    def in_sight(self, t: float) -> set[int]:
        """ids of the actors the frame at ``t`` shows (see ``vila_ros.sim.truth.in_sight``)."""
        return sim_truth.in_sight(self, t)

    def frame_labels(self, t: float, width: int = 112, height: int = 112, grid: int = 4) -> dict:
        """Attributes and occupancy grid of one frame (see ``vila_ros.sim.truth.frame_labels``)."""
        return sim_truth.frame_labels(self, t, width, height, grid)
