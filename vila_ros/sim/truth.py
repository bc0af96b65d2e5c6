"""Ground truth: what a window of frames of a scenario shows (events, counts, attributes), its caption, QA and
alert answer, and per-frame labels for pretraining a vision tower.

Truth is of what the frames show, not of what the world holds: an actor counts when the camera shows it in some
frame of the window (``in_sight``: drawn, mostly inside the image, not mostly behind nearer actors, the camera not
blocked), and an event counts when some frame is at least ``MIN_VISIBLE`` seconds after its start. Sentences and
questions come from ``vila_ros.tasks``, so the node, the training data and the evaluation share one vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from vila_ros import tasks
from vila_ros.sim.actors import occupancy_kind
from vila_ros.sim.camera import ACTOR_SIZE, area, intersect, screen_box
from vila_ros.sim.world import World

MIN_VISIBLE = 0.2  # an event counts in a window when some frame is at least this long after its start


@dataclass
class Truth:
    """Ground truth of one window of a scenario (a clip, or one frame), JSON-ready via ``to_dict``."""
    seed: int
    family: str
    stamps: list
    caption: str
    static_caption: str  # the caption without its event sentence (what one frame can support)
    attributes: dict
    qa: list  # [{"key", "question", "answer", "kind", "temporal"}]
    events: list  # [{"category", "severity", "start", "end", "first_frame"}]
    alert_answer: str
    scene: dict = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return [e["category"] for e in self.events]

    def to_dict(self) -> dict:
        return {"seed": self.seed, "family": self.family, "stamps": list(self.stamps), "caption": self.caption,
                "static_caption": self.static_caption, "attributes": dict(self.attributes), "qa": list(self.qa),
                "events": list(self.events), "alert_answer": self.alert_answer, "scene": dict(self.scene)}


def events_in(world: World, stamps: Sequence[float]) -> list[dict]:
    """Events visible in a window of frame times: some frame >= start + MIN_VISIBLE and the first <= end."""
    if world.event is None or not len(stamps):
        return []
    e = world.event
    if not (max(stamps) >= e.start + MIN_VISIBLE and stamps[0] <= e.end):
        return []
    first = next(i for i, s in enumerate(stamps) if s > e.start)
    return [dict(e.to_dict(), first_frame=first)]


def attributes(world: World, stamps: Sequence[float], events: list[dict] | None = None) -> dict:
    """The caption attributes of a window: the scene, the actors the frames show (counted once each), the light at
    the last frame and the event (``events`` default: ``events_in(world, stamps)``)."""
    if events is None:
        events = events_in(world, stamps)
    es = world.event_start
    counts: dict[str, int] = {}
    sights = [in_sight(world, t) for t in stamps]
    for actor in world.actors:
        if actor.count_as is None:
            continue
        seen = any(actor.counts(t, es) and id(actor) in sight for t, sight in zip(stamps, sights))
        counts[actor.count_as] = counts.get(actor.count_as, 0) + int(seen)
    p = world.params
    event = events[0]["category"] if events else "none"
    if world.family == "road":
        return {"family": "road", "time": p["time"], "weather": p["weather"], "cars": counts.get("cars", 0),
                "pedestrians": counts.get("pedestrians", 0), "cyclists": counts.get("cyclists", 0),
                "animals": counts.get("animals", 0), "boxes": counts.get("boxes", 0), "sign": p["sign"],
                "light": world.light_state(stamps[-1]), "event": event}
    return {"family": "warehouse", "lighting": p["lighting"], "people": counts.get("people", 0),
            "forklifts": counts.get("forklifts", 0), "boxes": counts.get("boxes", 0), "event": event}


def frame_labels(world: World, t: float, width: int = 112, height: int = 112, grid: int = 4) -> dict:
    """What one frame at ``t`` shows, for supervised pretraining of a vision tower (VILA starts from a pretrained
    SigLIP; a from-scratch tower learns to see from these): the frame's attributes (``attributes([t])`` without
    the event) and an occupancy grid: ``occupancy[row][col]`` lists the ``OCCUPANCY_KINDS`` whose centre
    projects into that cell of a ``grid`` x ``grid`` split of the image (of the actors ``in_sight``). Behind a
    blocked camera nothing shows, not even the kind of scene."""
    attrs = attributes(world, [t], events=[])
    attrs.pop("event")
    effect, level = world.effect_level(t)
    attrs["effect"] = effect if effect is not None and level >= 0.5 else "none"
    cells: list[list[set]] = [[set() for _ in range(grid)] for _ in range(grid)]
    sight = in_sight(world, t)
    if not sight:  # a blocked camera shows neither the scene nor its lighting
        for name in ("family", "time", "weather", "lighting", "sign", "light"):
            attrs.pop(name, None)
    cam = world.camera(width, height)
    for actor in world.actors:
        if id(actor) in sight:
            x, y, z, _ = actor.position(t, world.event_start)
            u, v = cam.proj(x, y + ACTOR_SIZE[actor.kind][1] / 2, z)
            if 0 <= u < width and 0 <= v < height:
                cells[int(v * grid / height)][int(u * grid / width)].add(occupancy_kind(actor, y))
    attrs["occupancy"] = [[sorted(cell) for cell in row] for row in cells]
    return attrs


def in_sight(world: World, t: float) -> set[int]:
    """ids of the actors the camera shows at ``t``: drawn, mostly inside the image, not mostly behind nearer
    actors, and the camera not blocked. Counts and occupancy are of what the frame shows, not of what the
    world holds (a cyclist behind a car, a pedestrian past the image edge are not in the truth)."""
    if _blocked(world, t):
        return set()
    cam = world.camera(112, 112)  # boxes in units of the image: the same at every size
    boxes = []
    for actor in world.actors:
        if actor.visible(t, world.event_start):
            x, y, z, _ = actor.position(t, world.event_start)
            if z > 0.5:
                boxes.append((z, id(actor), screen_box(cam, actor.kind, x, y, z)))
    boxes.sort()
    seen = set()
    for k, (z, key, box) in enumerate(boxes):
        box_area = area(box)
        if box_area <= 0 or area(intersect(box, (0.0, 0.0, 112.0, 112.0))) < 0.5 * box_area:
            continue
        covered = max((area(intersect(box, other)) for _, _, other in boxes[:k]), default=0.0)
        if covered < 0.6 * box_area:
            seen.add(key)
    return seen


def _blocked(world: World, t: float) -> bool:
    effect, level = world.effect_level(t)
    return effect == "camera_blocked" and level >= 0.5


def window_truth(world: World, stamps: Sequence[float]) -> Truth:
    """The ``Truth`` of the frames at ``stamps``."""
    stamps = [float(s) for s in stamps]
    events = events_in(world, stamps)
    attrs = attributes(world, stamps, events)
    cats = [e["category"] for e in events]
    qa = _qa(world, attrs, cats)
    if stamps and all(_blocked(world, t) for t in stamps):
        # Behind a covered lens the frames show no scene: the caption says so instead of inventing one.
        attrs = dict(tasks.BLOCKED_VIEW_ATTRIBUTES)
    return Truth(seed=world.seed, family=world.family, stamps=stamps, caption=tasks.make_caption(attrs),
                 static_caption=tasks.make_caption(attrs, include_event=False), attributes=attrs,
                 qa=qa, events=events, alert_answer=tasks.alert_answer(cats), scene=world.describe())


def _qa(world: World, a: dict, cats: list[str]) -> list[dict]:
    def yn(v):
        return "yes" if v else "no"

    def num(n):
        return tasks.NUMBER_WORDS[n] if n < len(tasks.NUMBER_WORDS) else str(n)

    if world.family == "road":
        answers = {"night": yn(a["time"] == "night"), "weather": a["weather"], "cars": num(a["cars"]),
                   "pedestrian": yn(a["pedestrians"]), "cyclist": yn(a["cyclists"]), "animal": yn(a["animals"]),
                   "box_road": yn(a["boxes"]), "traffic_light": yn(a["light"] != "none"),
                   "stop_sign": yn(a["sign"] == "stop")}
        if a["light"] != "none":
            answers["light_colour"] = a["light"]
    else:
        answers = {"dim": yn(a["lighting"] == "dim"), "people": num(a["people"]), "forklift": yn(a["forklifts"]),
                   "boxes_floor": num(a["boxes"])}
    for cat in tasks.categories_for(world.family):
        if cat == "red_light" and world.params.get("light", "none") == "none":
            continue
        answers[cat] = yn(cat in cats)
    qa = []
    for key, answer in answers.items():
        question, kind, temporal = tasks.QA_TEMPLATES[key]
        qa.append({"key": key, "question": question, "answer": answer, "kind": kind, "temporal": temporal})
    return qa
