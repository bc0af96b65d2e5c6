"""Scene simulator: time-continuous procedural scenarios (road, warehouse) with ground truth.

numpy + cv2 only (no torch, no rclpy). Modules by job, bottom up: ``camera`` (projection), ``actors`` (what moves
and its colours), ``world`` (scenario state and the event), ``paint_actors`` and ``paint_world`` (pixels),
``truth`` (what frames show: attributes, QA, alerts, frame labels), ``scenario`` (``Scenario``: render + truth),
``generate`` (``make_scenario``), ``clips`` (clip windows and clips), ``splits`` (seed splits). Writers (LLaVA JSON,
rosbag2) live in ``vila_ros.sim.writers``.
"""
from vila_ros.sim.actors import Actor
from vila_ros.sim.clips import Clip, clip_window, make_clip
from vila_ros.sim.generate import make_scenario
from vila_ros.sim.scenario import Scenario
from vila_ros.sim.splits import split_of, split_seeds
from vila_ros.sim.truth import MIN_VISIBLE, Truth
from vila_ros.sim.world import SCENARIO_DURATION, Event

__all__ = ["MIN_VISIBLE", "SCENARIO_DURATION", "Actor", "Clip", "Event", "Scenario", "Truth", "clip_window",
           "make_clip", "make_scenario", "split_of", "split_seeds"]
