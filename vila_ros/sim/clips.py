"""Clips: the frame times of a scenario's training/evaluation window and the rendered clip with its truth.

``clip_window`` places the window so that, with an event, its start falls between two frames early in the clip (the
first frames show the world before the event); it draws from its own generator seeded by the scenario seed, so it
never changes the scenario. ``make_clip`` renders those frames and the window's ``Truth``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vila_ros import tasks
from vila_ros.sim.generate import make_scenario
from vila_ros.sim.scenario import Scenario
from vila_ros.sim.truth import Truth


@dataclass
class Clip:
    """Rendered frames of a scenario window, their times and the window's truth."""
    frames: list  # list of HxWx3 uint8 RGB
    stamps: list  # seconds within the scenario
    truth: Truth
    scenario: Scenario | None = None


def clip_window(scenario: Scenario, seed: int, num_frames: int = 8, clip_fps: float = tasks.CLIP_FPS) -> list[float]:
    """Frame times of the training clip of a scenario: with an event, its start falls between frames k-1 and k for
    k drawn in 2..min(6, num_frames - 2) (so frame k is the first to show it and frame k+1 shows it clearly)."""
    rng = np.random.default_rng([int(seed), 4242])
    dt = 1.0 / clip_fps
    length = (num_frames - 1) * dt
    if scenario.event is not None and num_frames >= 4:
        k = int(rng.integers(2, min(6, num_frames - 2) + 1))
        t0 = scenario.event.start - (k - 0.5) * dt
    elif scenario.event is not None:
        t0 = scenario.event.start - 0.5 * dt
    else:
        t0 = float(rng.uniform(0.0, max(0.0, scenario.duration - length)))
    t0 = max(0.0, t0)
    return [t0 + i * dt for i in range(num_frames)]


def make_clip(seed: int, family: str | None = None, num_frames: int = 8, clip_fps: float = tasks.CLIP_FPS,
              size: int | tuple[int, int] = 112, category: str | None = "auto") -> Clip:
    """A training/evaluation clip: ``num_frames`` frames at ``clip_fps`` of ``make_scenario(seed, family, category)``.

    size: an int (square) or (width, height).
    """
    scenario = make_scenario(seed, family, category)
    width, height = (size, size) if isinstance(size, int) else size
    stamps = clip_window(scenario, seed, num_frames, clip_fps)
    frames = [scenario.render(t, width, height) for t in stamps]
    return Clip(frames, stamps, scenario.truth(stamps), scenario)
