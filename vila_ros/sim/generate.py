"""Scenario generation: ``make_scenario(seed, family, category)`` draws a world (parameters, distractors, the event
actor and the event's timing) from a generator seeded by ``seed`` alone.

Every draw comes from that one generator in a fixed order, so the same arguments always give the same world; adding,
removing or reordering draws changes the worlds of existing seeds (and so every dataset and evaluation made from
them). The event actor starts as one of the distractors (see ``vila_ros.sim.actors``) and the event starts between
30% and 65% of the duration.
"""
from __future__ import annotations

import math

import numpy as np

from vila_ros import tasks
from vila_ros.sim.actors import BOX_COLOURS, CAR_COLOURS, SHIRT_COLOURS, VEST_COLOURS, Actor
from vila_ros.sim.scenario import Scenario
from vila_ros.sim.world import SCENARIO_DURATION, Event


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _drift(rng, amp):
    return (float(rng.uniform(0.3, 1.0) * amp), float(rng.uniform(0.3, 0.9)), float(rng.uniform(0, 2 * math.pi)))


def make_scenario(seed: int, family: str | None = None, category: str | None = "auto",
                  duration: float = SCENARIO_DURATION) -> Scenario:
    """A scenario, deterministic in its arguments.

    family: "road", "warehouse" or None (chosen by seed; a forced category picks a family that has it).
    category: "auto" (chosen by seed: no event about 1 in 4), None (no event: a distractor-only scenario) or a name
    from ``tasks.CATEGORY_NAMES``. The event starts between 30% and 65% of ``duration`` (at least 1.5 s in).
    """
    rng = np.random.default_rng([int(seed), 20240])
    if category not in (None, "auto") and category not in tasks.CATEGORIES:
        raise ValueError(f"unknown category {category!r}")
    if family is None:
        options = tasks.FAMILIES if category in (None, "auto") else tasks.CATEGORIES[category].families
        family = options[0] if len(options) == 1 else ("road" if rng.random() < 0.6 else "warehouse")
    if family not in tasks.FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    if category == "auto":
        cats = tasks.categories_for(family)
        category = None if rng.random() < 0.25 else _pick(rng, cats)
    elif category is not None and family not in tasks.CATEGORIES[category].families:
        raise ValueError(f"category {category} does not occur in family {family}")
    start = float(max(1.5, rng.uniform(0.3, 0.65) * duration))
    builder = _build_road if family == "road" else _build_warehouse
    params, actors, end = builder(rng, category, start)
    event = None
    if category is not None:
        event = Event(category, start, end, tasks.default_severity(category))
    if category in ("camera_blocked", "camera_blurred"):
        params["occluder"] = (float(_pick(rng, (0.0, 1.0))), float(rng.uniform(0.0, 1.0)))
    params.setdefault("occluder", (0.0, 0.0))
    return Scenario(int(seed), family, duration, params, actors, event, rng)


def event_of(key: str) -> tuple[str | None, str]:
    """(family, category) that ``make_scenario`` takes for "warehouse/falling_object" (or (None, category) for a bare
    category name, whose family the seed then chooses)."""
    family, _, category = key.rpartition("/")
    if category not in tasks.CATEGORIES:
        raise ValueError(f"unknown category {category!r} in {key!r}; known: {', '.join(tasks.CATEGORIES)}")
    if family and family not in tasks.CATEGORIES[category].families:
        raise ValueError(f"category {category} does not occur in family {family!r}")
    return family or None, category


def _build_road(rng, category, start):
    focal, horizon, cam_h = 1.1, 0.40, 1.4
    params = {"horizon": horizon, "cam_height": cam_h, "focal": focal,
              "time": "night" if rng.random() < 0.4 else "day",
              "weather": _pick(rng, ("clear", "clear", "rain", "fog")),
              "sign": _pick(rng, ("none", "none", "stop", "speed")),
              "speed": float(_pick(rng, (0.0, 5.0, 9.0)))}
    if category == "red_light":
        params["light"] = "green"
    else:
        params["light"] = "none" if rng.random() < 0.5 else _pick(rng, ("green", "green", "red"))
    actors: list[Actor] = []
    end = start + 2.0
    car = lambda: _pick(rng, CAR_COLOURS)  # noqa: E731
    u = rng.uniform
    # Lanes (3 m): oncoming x in [-4.5, -1.5], ours [-1.5, 1.5], adjacent [1.5, 4.5]; sidewalks to |x| = 7.
    # Background traffic and distractors.
    if category != "wrong_way_vehicle" and rng.random() < 0.5:  # a lead car in our lane
        actors.append(Actor("car", float(u(-0.3, 0.3)), 0, float(u(17, 24)), car(), "rear", "cars",
                            drift=_drift(rng, 2.5)))
    if category != "vehicle_cut_in" and rng.random() < 0.45:  # distractor: a car that keeps the adjacent lane
        actors.append(Actor("car", float(u(2.8, 3.2)), 0, float(u(8, 12)), car(), "rear", "cars",
                            drift=_drift(rng, 1.2)))
    if rng.random() < 0.45:  # oncoming traffic in its own lane
        actors.append(Actor("car", float(u(-3.2, -2.8)), 0, float(u(12, 22)), car(), "front", "cars",
                            drift=_drift(rng, 4.0)))
    if category != "wrong_way_vehicle" and rng.random() < 0.1:  # distractor: a stopped car facing us in our lane
        if not any(a.kind == "car" and abs(a.x) < 1 for a in actors):
            actors.append(Actor("car", float(u(-0.3, 0.3)), 0, float(u(18, 22)), car(), "front", "cars"))
    side = _pick(rng, (-1.0, 1.0))
    if category != "pedestrian_crossing" and rng.random() < 0.35:  # distractor: a pedestrian waiting at the curb
        actors.append(Actor("pedestrian", side * float(u(4.7, 5.1)), 0, float(u(11.5, 15)),
                            _pick(rng, SHIRT_COLOURS), "left", "pedestrians"))
    if rng.random() < 0.2:  # a pedestrian walking along the other sidewalk
        actors.append(Actor("pedestrian", -side * 6.0, 0, float(u(16, 20)), _pick(rng, SHIRT_COLOURS),
                            "left", "pedestrians", drift=_drift(rng, 1.5)))
    if rng.random() < 0.25:  # a cyclist at the edge of the adjacent lane
        actors.append(Actor("cyclist", float(u(3.6, 3.9)), 0, float(u(13, 18)),
                            _pick(rng, SHIRT_COLOURS), "right", "cyclists", drift=_drift(rng, 1.5)))
    if category != "animal_crossing" and rng.random() < 0.15:  # distractor: an animal at the roadside
        actors.append(Actor("animal", side * float(u(5.6, 6.0)), 0, float(u(13, 16)),
                            (150, 90, 40), _pick(rng, ("left", "right")), "animals"))
    if category != "falling_object" and rng.random() < 0.15:  # distractor: a box resting on the road
        actors.append(Actor("box", float(u(-0.8, 0.8)), 0, float(u(7, 10)), _pick(rng, BOX_COLOURS),
                          count_as="boxes"))
    # The event actor: until the start it is one of the distractors above.
    if category == "pedestrian_crossing":
        s = _pick(rng, (-1.0, 1.0))
        x0 = s * float(u(4.7, 5.1))
        tx = s * float(u(0.2, 0.8))
        mt = abs(x0 - tx) / 3.0
        z = float(u(11.5, 15))
        actors.append(Actor("pedestrian", x0, 0, z, _pick(rng, SHIRT_COLOURS), "left", "pedestrians",
                            target=(tx, 0.0, z), move_time=mt, is_event_actor=True))
        end = start + mt
    elif category == "vehicle_cut_in":
        z = float(u(8, 11))
        mt = float(u(1.2, 1.6))
        actors.append(Actor("car", float(u(2.8, 3.2)), 0, z, car(), "rear", "cars",
                            target=(float(u(-0.2, 0.2)), 0.0, z - 1.0), move_time=mt, is_event_actor=True))
        end = start + mt
    elif category == "wrong_way_vehicle":
        z = float(u(18, 22))
        mt = (z - 6.0) / 8.0
        actors.append(Actor("car", float(u(-0.3, 0.3)), 0, z, car(), "front", "cars",
                            target=(float(u(-0.3, 0.3)), 0.0, 6.0), move_time=mt, is_event_actor=True))
        end = start + mt
    elif category == "falling_object":
        z = float(u(7, 10))
        x = float(u(-0.8, 0.8))
        y0 = cam_h + horizon * z / focal - 0.7  # just inside the top of the image
        mt = math.sqrt(2 * y0 / 25.0)
        actors.append(Actor("box", x, y0, z, _pick(rng, BOX_COLOURS), count_as="boxes", target=(x, 0.0, z),
                            move_time=mt, ease="fall", hidden_before_event=True, counted_after_event=True,
                            is_event_actor=True))
        end = start + mt + 0.5
    elif category == "red_light":
        end = start + 1.0
    elif category == "animal_crossing":
        s = _pick(rng, (-1.0, 1.0))
        x0 = s * float(u(5.6, 6.0))
        mt = 2 * abs(x0) / 4.5
        actors.append(Actor("animal", x0, 0, float(u(13, 16)), (150, 90, 40), "left" if s > 0 else "right",
                            "animals", target=(-x0, 0.0, None), move_time=mt, is_event_actor=True))
        end = start + mt
    elif category in ("camera_blocked", "camera_blurred"):
        end = math.inf
    _fix_targets(actors)
    return params, actors, end


def _fix_targets(actors):
    for a in actors:
        if a.target is not None and a.target[2] is None:
            a.target = (a.target[0], a.target[1], a.z)


def _build_warehouse(rng, category, start):
    bay = 2.7
    params = {"horizon": 0.45, "cam_height": 1.2, "focal": 1.0,
              "lighting": "dim" if rng.random() < 0.4 else "bright"}
    u = rng.uniform
    # Gaps between shelf units (cross aisles) where people stand; bay i spans z in [1 + i*bay, 1 + (i+1)*bay].
    gaps = set()
    for _ in range(int(rng.integers(1, 3))):
        gaps.add((_pick(rng, (-1.0, 1.0)), int(rng.integers(1, 4))))
    params["gaps"] = frozenset(gaps)
    gap_list = sorted(gaps)
    actors: list[Actor] = []
    end = start + 2.0

    def gap_spot(g):
        side, i = g
        return side * float(u(1.9, 2.1)), 1.0 + (i + 0.5) * bay

    if category != "person_in_aisle" and rng.random() < 0.4:  # distractor: a person waiting in a cross aisle
        x, z = gap_spot(_pick(rng, gap_list))
        actors.append(Actor("person", x, 0, z, _pick(rng, VEST_COLOURS), "left", "people"))
    if rng.random() < 0.3:  # a person far down the aisle
        actors.append(Actor("person", float(u(-0.5, 0.5)), 0, float(u(14, 20)),
                            _pick(rng, VEST_COLOURS), "left", "people", drift=_drift(rng, 1.5)))
    if category != "forklift_approaching":
        r = rng.random()
        if r < 0.3:  # distractor: a parked forklift facing us
            actors.append(Actor("forklift", float(u(-0.3, 0.3)), 0, float(u(9, 13)), (240, 190, 0), "front",
                                "forklifts"))
        elif r < 0.5:  # a forklift driving away from us, back and forth far down the aisle
            actors.append(Actor("forklift", float(u(-0.3, 0.3)), 0, float(u(13, 17)), (240, 190, 0), "rear",
                                "forklifts", drift=_drift(rng, 3.0)))
    for _ in range(int(rng.integers(0, 3)) if category != "falling_object" else int(rng.integers(0, 2))):
        # distractor: boxes resting on the floor
        actors.append(Actor("box", float(u(-0.8, 0.8)), 0, float(u(4, 8)), _pick(rng, BOX_COLOURS),
                            count_as="boxes"))
    if category == "person_in_aisle":
        g = _pick(rng, gap_list)
        x0, z = gap_spot(g)
        tx = g[0] * float(u(0.0, 0.4))
        mt = abs(x0 - tx) / 2.2
        actors.append(Actor("person", x0, 0, z, _pick(rng, VEST_COLOURS), "left", "people", target=(tx, 0.0, z),
                            move_time=mt, is_event_actor=True))
        end = start + mt
    elif category == "forklift_approaching":
        z = float(u(9, 13))
        mt = (z - 3.5) / 4.0
        actors.append(Actor("forklift", float(u(-0.3, 0.3)), 0, z, (240, 190, 0), "front", "forklifts",
                            target=(0.0, 0.0, 3.5), move_time=mt, is_event_actor=True))
        end = start + mt
    elif category == "falling_object":
        side = _pick(rng, (-1.0, 1.0))
        z = float(u(4.5, 7.5))
        y0 = 1.6
        mt = math.sqrt(2 * y0 / 15.0) + 0.05
        actors.append(Actor("box", side * 1.2, y0, z, _pick(rng, BOX_COLOURS), count_as="boxes",
                            target=(side * float(u(0.2, 0.6)), 0.0, z), move_time=mt, ease="fall",
                            counted_after_event=True, is_event_actor=True))
        end = start + mt + 0.5
    elif category in ("camera_blocked", "camera_blurred"):
        end = math.inf
    return params, actors, end
