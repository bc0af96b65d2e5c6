"""Actors: the things in a scenario (cars, people, animals, boxes, forklifts), where each is at time ``t``, and the
colours they come in.

An ``Actor`` has a rest pose, an optional background drift, and, for the event actor, a motion that starts with the
event. Until the event starts an event actor behaves exactly like a distractor (a pedestrian standing at the curb, a
car keeping its adjacent lane, a parked forklift, a box on a shelf), so no frame before the start shows the event.
``OCCUPANCY_KINDS`` are the classes of the occupancy grid of ``Scenario.frame_labels``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CAR_COLOURS = ((200, 30, 30), (30, 70, 200), (235, 235, 235), (30, 30, 30), (240, 200, 20), (40, 150, 60))
SHIRT_COLOURS = ((220, 40, 40), (40, 90, 220), (240, 200, 30), (160, 50, 180), (30, 170, 170), (250, 130, 20))
VEST_COLOURS = ((250, 140, 0), (200, 240, 20))
SKIN = (230, 180, 140)
BOX_COLOURS = ((205, 130, 55), (185, 110, 40), (220, 150, 70))

# What the occupancy grid tells apart: the kinds, and for vehicles which way they face (a car facing us in our lane
# is how a wrong-way driver looks in one frame) and for boxes whether they are in the air.
OCCUPANCY_KINDS = ("car_rear", "car_front", "pedestrian", "cyclist", "animal", "box", "box_falling", "person",
                   "forklift_rear", "forklift_front")


@dataclass
class Actor:
    kind: str  # car, pedestrian, cyclist, animal, box, person, forklift
    x: float
    y: float
    z: float
    colour: tuple
    facing: str = "rear"  # vehicles: rear/front; walkers and animals: left/right
    count_as: str | None = None  # attribute key this actor adds to
    drift: tuple = (0.0, 0.0, 0.0)  # z += a*sin(w*t + p)
    walk_x: float = 0.0  # x drift speed for background walkers (bounded, see position)
    target: tuple | None = None  # event motion end point (x, y, z)
    move_time: float = 1.0
    ease: str = "linear"  # linear | fall
    hidden_before_event: bool = False
    counted_after_event: bool = False
    is_event_actor: bool = False

    def position(self, t: float, event_start: float) -> tuple[float, float, float, bool]:
        """(x, y, z, moving) at time t."""
        a, w, p = self.drift
        x, y, z = self.x, self.y, self.z + (a * math.sin(w * t + p) if a else 0.0)
        if self.walk_x:
            x += 0.6 * math.sin(self.walk_x * t)
        if self.target is None or t < event_start:
            return x, y, z, bool(a or self.walk_x)
        s = min(1.0, (t - event_start) / self.move_time)
        tx, ty, tz = self.target
        if self.ease == "fall":
            yy = y + (ty - y) * s * s
        else:
            yy = y + (ty - y) * s
        return x + (tx - x) * s, yy, z + (tz - z) * s, s < 1.0

    def visible(self, t: float, event_start: float) -> bool:
        return not (self.hidden_before_event and t < event_start)

    def counts(self, t: float, event_start: float) -> bool:
        return self.count_as is not None and self.visible(t, event_start) and not (
            self.counted_after_event and t < event_start)


def occupancy_kind(actor: Actor, y: float) -> str:
    """The ``OCCUPANCY_KINDS`` entry of ``actor`` at height ``y``."""
    if actor.kind in ("car", "forklift"):
        return f"{actor.kind}_{'front' if actor.facing == 'front' else 'rear'}"
    if actor.kind == "box":
        return "box_falling" if y > 0.3 else "box"
    return actor.kind
