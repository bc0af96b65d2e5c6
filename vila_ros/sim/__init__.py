"""Scene simulator: time-continuous procedural scenarios (road, warehouse) with ground truth.

numpy + cv2 only (no torch, no rclpy). Writers (LLaVA JSON, rosbag2) live in ``vila_ros.sim.writers``.
"""
from vila_ros.sim.scene import (MIN_VISIBLE, SCENARIO_DURATION, Actor, Clip, Event, Scenario, Truth, clip_window,
                                make_clip, make_scenario, split_of, split_seeds)

__all__ = ["MIN_VISIBLE", "SCENARIO_DURATION", "Actor", "Clip", "Event", "Scenario", "Truth", "clip_window",
           "make_clip", "make_scenario", "split_of", "split_seeds"]
