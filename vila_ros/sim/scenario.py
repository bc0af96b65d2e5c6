"""Time-continuous procedural scenarios: a road seen from a front camera and a warehouse aisle seen from a robot.

Geometry lives in metres (x right, y up, z forward from the camera) and is projected with focal lengths that are
multiples of the image width and height (``fx = f W``, ``fy = f H``): a render at any size, squashed to a square,
matches the square render, so a 640x480 bag frame resized to 112x112 looks like the training frames.

Every event actor behaves exactly like a distractor until the event starts (a pedestrian standing at the curb, a car
keeping its adjacent lane, a stopped car facing us, a parked forklift, a green light, a box on a shelf, an animal at
the roadside), so no frame before the start shows the event; ``Scenario.without_event()`` is that distractor world.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from vila_ros import tasks

SCENARIO_DURATION = 10.0  # seconds; render() accepts any t >= 0 (the world holds its last state)
LIGHT_Z = 13.0  # depth of the traffic light over our lane
MIN_VISIBLE = 0.2  # an event counts in a window when some frame is at least this long after its start
SHIFT = 4  # sub-pixel bits for cv2 polygons
_S = float(1 << SHIFT)

# ------------------------------------------------------------------------------------------------------ palette
CAR_COLOURS = ((200, 30, 30), (30, 70, 200), (235, 235, 235), (30, 30, 30), (240, 200, 20), (40, 150, 60))
SHIRT_COLOURS = ((220, 40, 40), (40, 90, 220), (240, 200, 30), (160, 50, 180), (30, 170, 170), (250, 130, 20))
VEST_COLOURS = ((250, 140, 0), (200, 240, 20))
SKIN = (230, 180, 140)
BOX_COLOURS = ((205, 130, 55), (185, 110, 40), (220, 150, 70))


def _shade(colour, k: float):
    return (int(colour[0] * k), int(colour[1] * k), int(colour[2] * k))


# ------------------------------------------------------------------------------------------------------- camera
class Camera:
    def __init__(self, width: int, height: int, horizon: float, cam_height: float, focal: float = 1.0):
        self.w, self.h = width, height
        self.fx, self.fy = focal * width, focal * height
        self.cx, self.vh = width / 2.0, horizon * height
        self.cam_h = cam_height
        self.px = min(width, height) / 112.0  # line thickness unit

    def proj(self, x: float, y: float, z: float) -> tuple[float, float]:
        z = max(z, 0.3)
        return self.cx + self.fx * x / z, self.vh + self.fy * (self.cam_h - y) / z

    def poly(self, img, pts3d, colour):
        pts = np.array([self.proj(*p) for p in pts3d], dtype=np.float64)
        cv2.fillPoly(img, [np.round(pts * _S).astype(np.int32)], colour, cv2.LINE_8, SHIFT)

    def rect(self, img, u0, v0, u1, v1, colour):
        pts = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
        cv2.fillPoly(img, [np.round(pts * _S).astype(np.int32)], colour, cv2.LINE_8, SHIFT)

    def circle(self, img, u, v, r, colour, thickness=-1):
        cv2.circle(img, (int(round(u * _S)), int(round(v * _S))), max(int(round(r * _S)), 1 << SHIFT - 1), colour,
                   thickness if thickness < 0 else max(1, int(round(thickness))), cv2.LINE_8, SHIFT)

    def line(self, img, p0, p1, colour, thickness):
        cv2.line(img, (int(round(p0[0] * _S)), int(round(p0[1] * _S))), (int(round(p1[0] * _S)), int(round(p1[1] * _S))),
                 colour, max(1, int(round(thickness))), cv2.LINE_8, SHIFT)

    def scale(self, z: float) -> tuple[float, float]:
        """Pixels per metre (horizontal, vertical) at depth z."""
        z = max(z, 0.3)
        return self.fx / z, self.fy / z


# What the occupancy grid of `Scenario.frame_labels` tells apart: the kinds, and for vehicles which way they face
# (a car facing us in our lane is how a wrong-way driver looks in one frame) and for boxes whether they are in the air.
OCCUPANCY_KINDS = ("car_rear", "car_front", "pedestrian", "cyclist", "animal", "box", "box_falling", "person",
                   "forklift_rear", "forklift_front")
# (width, height) in metres of what `_draw_*` paints, base at the actor's y
_SIZE = {"car": (1.9, 1.55), "pedestrian": (0.5, 1.9), "person": (0.5, 1.9), "cyclist": (1.5, 1.8),
         "animal": (1.8, 1.8), "box": (0.8, 0.8), "forklift": (1.25, 2.6)}


def _screen_box(cam: "Camera", kind: str, x: float, y: float, z: float) -> tuple[float, float, float, float]:
    width, height = _SIZE[kind]
    u, v = cam.proj(x, y, z)
    sx, sy = cam.scale(z)
    return u - width * sx / 2, v - height * sy, u + width * sx / 2, v


def _intersect(a: tuple, b: tuple) -> tuple[float, float, float, float]:
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def _area(box: tuple) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _occupancy_kind(actor: "Actor", y: float) -> str:
    if actor.kind in ("car", "forklift"):
        return f"{actor.kind}_{'front' if actor.facing == 'front' else 'rear'}"
    if actor.kind == "box":
        return "box_falling" if y > 0.3 else "box"
    return actor.kind


# ------------------------------------------------------------------------------------------------------- actors
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


def _draw_car(img, cam: Camera, x, z, colour, facing, shade, night):
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    w, h = 1.9 * sx, 1.55 * sy
    body = _shade(colour, shade)
    cam.rect(img, u - w * 0.46, vb - h * 0.22, u - w * 0.28, vb, (15, 15, 15))  # wheels
    cam.rect(img, u + w * 0.28, vb - h * 0.22, u + w * 0.46, vb, (15, 15, 15))
    cam.rect(img, u - w / 2, vb - h * 0.62, u + w / 2, vb - h * 0.12, body)
    cam.rect(img, u - w * 0.38, vb - h, u + w * 0.38, vb - h * 0.6, body)
    cam.rect(img, u - w * 0.31, vb - h * 0.93, u + w * 0.31, vb - h * 0.64, _shade((40, 50, 70), shade))
    lamp = (255, 25, 25) if facing == "rear" else (255, 250, 200)
    lw, lh = w * 0.16, h * 0.12
    r = max(lw, lh) * (1.1 if night else 0.0)
    for cu in (u - w * 0.38, u + w * 0.38):
        if night:
            cam.circle(img, cu, vb - h * 0.42, r, _shade(lamp, 0.75))
        cam.rect(img, cu - lw / 2, vb - h * 0.48, cu + lw / 2, vb - h * 0.36, lamp)


def _draw_walker(img, cam: Camera, x, z, colour, shade, t, moving, vest=False):
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    h = 1.75 * sy
    w = 0.5 * sx
    legs = _shade((35, 35, 60), shade)
    swing = 0.18 * sx * math.sin(t * 9.0) if moving else 0.0
    lt = max(1.0, 0.16 * sx)
    cam.line(img, (u - w * 0.2, vb - h * 0.47), (u - w * 0.2 + swing, vb), legs, lt)
    cam.line(img, (u + w * 0.2, vb - h * 0.47), (u + w * 0.2 - swing, vb), legs, lt)
    cam.rect(img, u - w / 2, vb - h * 0.82, u + w / 2, vb - h * 0.45, _shade(colour, shade))
    if vest:
        cam.rect(img, u - w / 2, vb - h * 0.66, u + w / 2, vb - h * 0.6, _shade((235, 235, 235), shade))
    cam.circle(img, u, vb - h * 0.9, 0.13 * sy * 1.2, _shade(SKIN, shade))


def _draw_cyclist(img, cam: Camera, x, z, colour, shade, t):
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    r = 0.36 * sy
    dark = _shade((20, 20, 20), shade)
    th = max(1.0, 0.08 * sx)
    for cu in (u - 0.55 * sx, u + 0.55 * sx):
        cam.circle(img, cu, vb - r, r, dark, th)
    cam.line(img, (u - 0.55 * sx, vb - r), (u, vb - 2.0 * r), _shade((200, 200, 210), shade), th)
    cam.line(img, (u, vb - 2.0 * r), (u + 0.55 * sx, vb - r), _shade((200, 200, 210), shade), th)
    cam.rect(img, u - 0.22 * sx, vb - 1.55 * sy, u + 0.22 * sx, vb - 0.95 * sy, _shade(colour, shade))
    cam.line(img, (u, vb - 0.95 * sy), (u + 0.1 * sx * math.sin(t * 6), vb - 2.0 * r), _shade((35, 35, 60), shade), th)
    cam.circle(img, u + 0.05 * sx, vb - 1.68 * sy, 0.14 * sy * 1.2, _shade((250, 250, 250), shade))


def _draw_animal(img, cam: Camera, x, z, colour, facing, shade, t, moving):
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    d = 1.0 if facing == "right" else -1.0
    body = _shade(colour, shade)
    bl, bh = 1.6 * sx, 0.6 * sy
    lt = max(1.0, 0.12 * sx)
    swing = 0.15 * sx * math.sin(t * 10.0) if moving else 0.0
    for k, lu in enumerate((u - bl * 0.38, u - bl * 0.22, u + bl * 0.22, u + bl * 0.38)):
        sw = swing if k % 2 == 0 else -swing
        cam.line(img, (lu, vb - 0.75 * sy), (lu + sw, vb), body, lt)
    cv2.ellipse(img, (int(round(u * _S)), int(round((vb - 0.95 * sy) * _S))),
                (max(int(round(bl / 2 * _S)), 8), max(int(round(bh / 2 * _S)), 8)), 0, 0, 360, body, -1, cv2.LINE_8,
                SHIFT)
    nu, nv = u + d * bl * 0.5, vb - 1.1 * sy
    cam.line(img, (nu - d * 0.08 * sx, nv), (nu + d * 0.2 * sx, vb - 1.6 * sy), body, max(1.0, 0.2 * sx))
    cam.circle(img, nu + d * 0.3 * sx, vb - 1.65 * sy, 0.17 * sy * 1.3, body)
    cam.circle(img, u - d * bl * 0.5, vb - 1.05 * sy, 0.09 * sy * 1.3, _shade((245, 245, 245), shade))


def _draw_box(img, cam: Camera, x, y, z, colour, shade, size=0.8):
    half = size / 2
    front = _shade(colour, shade)
    top = _shade(tuple(min(255, c + 35) for c in colour), shade)
    cam.poly(img, [(x - half, y + size * 0.75, z + size), (x + half, y + size * 0.75, z + size),
                   (x + half, y + size * 0.75, z), (x - half, y + size * 0.75, z)], top)
    cam.poly(img, [(x - half, y, z), (x + half, y, z), (x + half, y + size * 0.75, z), (x - half, y + size * 0.75, z)],
             front)
    cam.poly(img, [(x - 0.06, y, z), (x + 0.06, y, z), (x + 0.06, y + size * 0.75, z), (x - 0.06, y + size * 0.75, z)],
             _shade((235, 215, 160), shade))


def _draw_forklift(img, cam: Camera, x, z, colour, facing, shade, night):
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    w = 1.25 * sx
    body = _shade(colour, shade)
    dark = _shade((25, 25, 25), shade)
    cam.rect(img, u - w * 0.5, vb - 0.3 * sy, u - w * 0.3, vb, dark)
    cam.rect(img, u + w * 0.3, vb - 0.3 * sy, u + w * 0.5, vb, dark)
    cam.rect(img, u - w / 2, vb - 1.2 * sy, u + w / 2, vb - 0.2 * sy, body)
    th = max(1.0, 0.1 * sx)
    cam.line(img, (u - w * 0.45, vb - 1.2 * sy), (u - w * 0.45, vb - 2.2 * sy), dark, th)  # overhead guard
    cam.line(img, (u + w * 0.45, vb - 1.2 * sy), (u + w * 0.45, vb - 2.2 * sy), dark, th)
    cam.line(img, (u - w * 0.45, vb - 2.2 * sy), (u + w * 0.45, vb - 2.2 * sy), dark, th)
    if facing == "front":
        cam.rect(img, u - w * 0.32, vb - 2.6 * sy, u - w * 0.2, vb - 0.1 * sy, _shade((60, 60, 60), shade))  # mast
        cam.rect(img, u + w * 0.2, vb - 2.6 * sy, u + w * 0.32, vb - 0.1 * sy, _shade((60, 60, 60), shade))
        cam.rect(img, u - w * 0.4, vb - 0.18 * sy, u + w * 0.4, vb - 0.05 * sy, _shade((170, 170, 175), shade))
        lamp = (255, 250, 200)
    else:
        cam.rect(img, u - w * 0.5, vb - 0.75 * sy, u + w * 0.5, vb - 0.2 * sy, dark)  # counterweight
        lamp = (255, 30, 30)
    for cu in (u - w * 0.36, u + w * 0.36):
        cam.circle(img, cu, vb - 1.0 * sy, 0.09 * sy * (2.0 if night else 1.2), lamp)


# ---------------------------------------------------------------------------------------------------- scenarios
@dataclass
class Event:
    category: str
    start: float
    end: float  # math.inf for states that persist (camera_blocked, camera_blurred)
    severity: int = 0

    def to_dict(self) -> dict:
        return {"category": self.category, "severity": self.severity, "start": self.start,
                "end": None if math.isinf(self.end) else self.end}


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


class Scenario:
    """A world that can be rendered at any time ``t`` (seconds) and any size. See module docstring."""

    def __init__(self, seed: int, family: str, duration: float, params: dict, actors: list[Actor],
                 event: Event | None, rng: np.random.Generator):
        self.seed, self.family, self.duration = seed, family, duration
        self.params, self.actors, self.event = params, actors, event
        self._cache: dict = {}
        # rain streaks (normalised positions), fixed by seed
        self._rain = rng.random((48, 2)) if params.get("weather") == "rain" else None

    # ---------------------------------------------------------------- state
    @property
    def event_start(self) -> float:
        return self.event.start if self.event is not None else math.inf

    def without_event(self) -> "Scenario":
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

    # -------------------------------------------------------------- render
    def render(self, t: float, width: int = 112, height: int = 112) -> np.ndarray:
        """The camera frame at time ``t`` seconds: ``height x width x 3`` uint8 RGB."""
        self._camera(width, height)
        bg, cam = self._cache[(width, height)]
        img = bg.copy()
        es = self.event_start
        night = self.params.get("time") == "night"
        shade = 0.65 if night else (0.6 if self.params.get("lighting") == "dim" else 1.0)
        if self.family == "road":
            self._draw_road_dynamic(img, cam, t, shade, night)
        drawn = []
        for actor in self.actors:
            if actor.visible(t, es):
                x, y, z, moving = actor.position(t, es)
                drawn.append((z, actor, x, y, moving))
        drawn.sort(key=lambda item: -item[0])
        for z, actor, x, y, moving in drawn:
            k = actor.kind
            if k == "car":
                _draw_car(img, cam, x, z, actor.colour, actor.facing, shade, night)
            elif k in ("pedestrian", "person"):
                _draw_walker(img, cam, x, z, actor.colour, shade, t, moving, vest=(k == "person"))
            elif k == "cyclist":
                _draw_cyclist(img, cam, x, z, actor.colour, shade, t)
            elif k == "animal":
                _draw_animal(img, cam, x, z, actor.colour, actor.facing, shade, t, moving)
            elif k == "box":
                _draw_box(img, cam, x, y, z, actor.colour, shade)
            elif k == "forklift":
                _draw_forklift(img, cam, x, z, actor.colour, actor.facing, shade, night)
        weather = self.params.get("weather")
        if weather == "rain":
            self._draw_rain(img, t)
        elif weather == "fog":
            fog, alpha = self._fog(width, height)
            img = (img * (1.0 - alpha) + fog).astype(np.uint8)
        effect, level = self.effect_level(t)
        if effect == "camera_blocked" and level > 0:
            eu, ev = self.params["occluder"]
            r = level * 1.5 * math.hypot(width, height)
            cv2.circle(img, (int(eu * width), int(ev * height)), max(1, int(r)), (28, 22, 18), -1)
        elif effect == "camera_blurred" and level > 0:
            sigma = level * 0.045 * min(width, height)
            if sigma > 0.3:
                img = cv2.GaussianBlur(img, (0, 0), sigma)
        return img

    def _fog(self, width, height):
        key = ("fog", width, height)
        if key not in self._cache:
            v = (np.arange(height, dtype=np.float32) + 0.5) / height
            hor = self.params["horizon"]
            depth = np.clip((v - hor) / (1.0 - hor), 0.0, 1.0)
            alpha = np.where(v < hor, 0.6, 0.6 * (1.0 - depth) ** 2).astype(np.float32)[:, None, None]
            fog = alpha * np.array((185, 188, 192), np.float32)
            self._cache[key] = (fog, alpha)
        return self._cache[key]

    def _draw_rain(self, img, t):
        h, w = img.shape[:2]
        px = min(w, h) / 112.0
        pos = self._rain
        xs = (pos[:, 0] + 0.15 * t) % 1.0 * w
        ys = (pos[:, 1] + 1.7 * t) % 1.0 * h
        colour = (170, 175, 190)
        length = 0.09 * h
        for x, y in zip(xs, ys):
            cv2.line(img, (int(x), int(y)), (int(x - 0.15 * length), int(y + length)), colour, max(1, int(px)))

    # --------------------------------------------------------- background
    def _background(self, width, height):
        p = self.params
        cam = Camera(width, height, p["horizon"], p["cam_height"], p["focal"])
        img = np.zeros((height, width, 3), np.uint8)
        if self.family == "road":
            self._road_background(img, cam)
        else:
            self._warehouse_background(img, cam)
        return img, cam

    def _road_background(self, img, cam):
        p = self.params
        night = p["time"] == "night"
        k = 0.45 if night else 1.0
        hor = int(round(cam.vh))
        img[:hor] = (15, 20, 48) if night else (120, 180, 235)
        img[hor:] = _shade((70, 135, 55), k)
        far = 250.0
        cam.poly(img, [(-7.0, 0, 1.0), (7.0, 0, 1.0), (7.0, 0, far), (-7.0, 0, far)], _shade((165, 160, 155), k))
        cam.poly(img, [(-4.5, 0, 1.0), (4.5, 0, 1.0), (4.5, 0, far), (-4.5, 0, far)],
                 (40, 40, 45) if night else (85, 85, 90))
        for x0, x1, colour in ((-1.66, -1.54, (240, 200, 30)), (-1.46, -1.34, (240, 200, 30)),
                               (4.25, 4.4, (235, 235, 235)), (-4.4, -4.25, (235, 235, 235))):
            cam.poly(img, [(x0, 0, 1.0), (x1, 0, 1.0), (x1, 0, far), (x0, 0, far)], _shade(colour, 0.8 if night else 1))
        if p["sign"] != "none":
            z, x = 14.0, -5.8
            u, vb = cam.proj(x, 0.0, z)
            sx, sy = cam.scale(z)
            cam.rect(img, u - 0.06 * sx, vb - 2.6 * sy, u + 0.06 * sx, vb, _shade((120, 120, 120), k))
            cu, cv_, r = u, vb - 3.0 * sy, 0.8 * sy
            if p["sign"] == "stop":
                ang = np.deg2rad(22.5 + 45.0 * np.arange(8))
                pts = np.stack([cu + r * np.cos(ang) * sx / sy, cv_ + r * np.sin(ang)], 1)
                cv2.fillPoly(img, [np.round(pts * _S).astype(np.int32)], _shade((210, 20, 20), max(k, 0.7)),
                             cv2.LINE_8, SHIFT)
                cam.rect(img, cu - 0.45 * sx, cv_ - 0.1 * sy, cu + 0.45 * sx, cv_ + 0.1 * sy, (240, 240, 240))
            else:
                cam.circle(img, cu, cv_, r, _shade((210, 20, 20), max(k, 0.7)))
                cam.circle(img, cu, cv_, r * 0.72, _shade((245, 245, 245), max(k, 0.7)))
                cam.rect(img, cu - 0.35 * sx, cv_ - 0.25 * sy, cu + 0.35 * sx, cv_ + 0.25 * sy, (20, 20, 20))
        if p["light"] != "none":
            z = LIGHT_Z
            grey = _shade((90, 90, 95), k)
            for pts in ([(5.2, 0, z), (5.45, 0, z), (5.45, 5.7, z), (5.2, 5.7, z)],
                        [(-0.55, 5.4, z), (5.45, 5.4, z), (5.45, 5.7, z), (-0.55, 5.7, z)]):
                cam.poly(img, pts, grey)
            cam.poly(img, [(-0.55, 2.85, z), (0.55, 2.85, z), (0.55, 5.4, z), (-0.55, 5.4, z)], (25, 25, 25))

    def _draw_road_dynamic(self, img, cam, t, shade, night):
        p = self.params
        offset = (p["speed"] * t) % 9.0
        colour = _shade((235, 235, 235), 0.8 if night else 1.0)
        z = 2.0 - offset
        while z < 70.0:
            z0, z1 = max(z, 1.0), z + 3.0
            if z1 > 1.0:
                cam.poly(img, [(1.43, 0, z0), (1.57, 0, z0), (1.57, 0, z1), (1.43, 0, z1)], colour)
            z += 9.0
        state = self.light_state(t)
        if state != "none":
            z = LIGHT_Z
            sx, sy = cam.scale(z)
            u = cam.proj(0.0, 0.0, z)[0]
            for name, y, on in (("red", 4.85, (255, 30, 30)), ("yellow", 4.1, (255, 200, 0)),
                                ("green", 3.35, (30, 230, 60))):
                v = cam.proj(0.0, y, z)[1]
                lit = state == name
                if lit and night:
                    cam.circle(img, u, v, 0.5 * sy, _shade(on, 0.6))
                cam.circle(img, u, v, 0.34 * sy, on if lit else (55, 55, 55))

    def _warehouse_background(self, img, cam):
        p = self.params
        k = 0.6 if p["lighting"] == "dim" else 1.0
        hor = int(round(cam.vh))
        img[:hor] = _shade((70, 72, 80), k)
        img[hor:] = _shade((70, 72, 80), k)
        far = 36.0
        cam.poly(img, [(-2.7, 0, far), (2.7, 0, far), (2.7, 5.0, far), (-2.7, 5.0, far)], _shade((160, 160, 165), k))
        cam.poly(img, [(-2.7, 0, 0.5), (2.7, 0, 0.5), (2.7, 0, far), (-2.7, 0, far)], _shade((150, 145, 135), k))
        for x0 in (-1.4, 1.28):
            cam.poly(img, [(x0, 0, 0.5), (x0 + 0.12, 0, 0.5), (x0 + 0.12, 0, far), (x0, 0, far)],
                     _shade((240, 200, 20), k))
        for zl in np.arange(3.0, far, 4.0):
            cam.poly(img, [(-0.3, 5.0, zl), (0.3, 5.0, zl), (0.3, 5.0, zl + 1.2), (-0.3, 5.0, zl + 1.2)],
                     (255, 255, 235) if k == 1.0 else (200, 200, 170))
        bay = 2.7
        rng = np.random.default_rng([self.seed, 7])
        for side in (-1.0, 1.0):
            xf, xb = side * 1.5, side * 2.7
            nb = int(far // bay)
            for i in range(nb - 1, -1, -1):  # far to near
                z0, z1 = 1.0 + i * bay, 1.0 + (i + 1) * bay
                if (side, i) in p["gaps"]:
                    cam.poly(img, [(xb, 0, z0), (xb, 4.6, z0), (xb, 4.6, z1), (xb, 0, z1)], _shade((95, 95, 105), k))
                    cam.poly(img, [(xf, 0, z0), (xb, 0, z0), (xb, 0, z1), (xf, 0, z1)], _shade((140, 135, 125), k))
                    continue
                cam.poly(img, [(xf, 0, z0), (xf, 4.4, z0), (xf, 4.4, z1), (xf, 0, z1)], _shade((40, 36, 36), k))
                for level in (0.15, 1.6, 3.05):
                    zc = z0 + 0.12
                    while zc < z1 - 0.5:
                        bw = rng.uniform(0.5, 1.1)
                        bh = rng.uniform(0.6, 1.15)
                        if rng.random() < 0.85:
                            colour = BOX_COLOURS[int(rng.integers(len(BOX_COLOURS)))]
                            ze = min(zc + bw, z1 - 0.1)
                            cam.poly(img, [(xf, level, zc), (xf, level + bh, zc), (xf, level + bh, ze), (xf, level, ze)],
                                     _shade(colour, k * rng.uniform(0.8, 1.0)))
                        zc += bw + 0.1
                    cam.poly(img, [(xf, level - 0.12, z0), (xf, level, z0), (xf, level, z1), (xf, level - 0.12, z1)],
                             _shade((235, 120, 20), k))
                for zu in (z0, z1 - 0.12):
                    cam.poly(img, [(xf, 0, zu), (xf, 4.4, zu), (xf, 4.4, zu + 0.12), (xf, 0, zu + 0.12)],
                             _shade((30, 70, 190), k))

    # --------------------------------------------------------------- truth
    def events_in(self, stamps: Sequence[float]) -> list[dict]:
        """Events visible in a window of frame times: some frame >= start + MIN_VISIBLE and the first <= end."""
        if self.event is None or not len(stamps):
            return []
        e = self.event
        if not (max(stamps) >= e.start + MIN_VISIBLE and stamps[0] <= e.end):
            return []
        first = next(i for i, s in enumerate(stamps) if s > e.start)
        return [dict(e.to_dict(), first_frame=first)]

    def attributes(self, stamps: Sequence[float], events: list[dict] | None = None) -> dict:
        if events is None:
            events = self.events_in(stamps)
        es = self.event_start
        counts: dict[str, int] = {}
        in_sight = [self.in_sight(t) for t in stamps]
        for actor in self.actors:
            if actor.count_as is None:
                continue
            seen = any(actor.counts(t, es) and id(actor) in sight for t, sight in zip(stamps, in_sight))
            counts[actor.count_as] = counts.get(actor.count_as, 0) + int(seen)
        p = self.params
        event = events[0]["category"] if events else "none"
        if self.family == "road":
            return {"family": "road", "time": p["time"], "weather": p["weather"], "cars": counts.get("cars", 0),
                    "pedestrians": counts.get("pedestrians", 0), "cyclists": counts.get("cyclists", 0),
                    "animals": counts.get("animals", 0), "boxes": counts.get("boxes", 0), "sign": p["sign"],
                    "light": self.light_state(stamps[-1]), "event": event}
        return {"family": "warehouse", "lighting": p["lighting"], "people": counts.get("people", 0),
                "forklifts": counts.get("forklifts", 0), "boxes": counts.get("boxes", 0), "event": event}

    def frame_labels(self, t: float, width: int = 112, height: int = 112, grid: int = 4) -> dict:
        """What one frame at ``t`` shows, for supervised pretraining of a vision tower (VILA starts from a pretrained
        SigLIP; a from-scratch tower learns to see from these): the frame's attributes (``attributes([t])`` without
        the event) and an occupancy grid: ``occupancy[row][col]`` lists the ``OCCUPANCY_KINDS`` whose centre
        projects into that cell of a ``grid`` x ``grid`` split of the image (of the actors ``in_sight``). Behind a
        blocked camera nothing shows, not even the kind of scene."""
        attrs = self.attributes([t], events=[])
        attrs.pop("event")
        effect, level = self.effect_level(t)
        attrs["effect"] = effect if effect is not None and level >= 0.5 else "none"
        cells: list[list[set]] = [[set() for _ in range(grid)] for _ in range(grid)]
        sight = self.in_sight(t)
        if not sight:  # a blocked camera shows neither the scene nor its lighting
            for name in ("family", "time", "weather", "lighting", "sign", "light"):
                attrs.pop(name, None)
        cam = self._camera(width, height)
        for actor in self.actors:
            if id(actor) in sight:
                x, y, z, _ = actor.position(t, self.event_start)
                u, v = cam.proj(x, y + _SIZE[actor.kind][1] / 2, z)
                if 0 <= u < width and 0 <= v < height:
                    cells[int(v * grid / height)][int(u * grid / width)].add(_occupancy_kind(actor, y))
        attrs["occupancy"] = [[sorted(cell) for cell in row] for row in cells]
        return attrs

    def _camera(self, width: int, height: int) -> "Camera":
        key = (width, height)
        if key not in self._cache:
            self._cache[key] = self._background(width, height)
        return self._cache[key][1]

    def in_sight(self, t: float) -> set[int]:
        """ids of the actors the camera shows at ``t``: drawn, mostly inside the image, not mostly behind nearer
        actors, and the camera not blocked. Counts and occupancy are of what the frame shows, not of what the
        world holds (a cyclist behind a car, a pedestrian past the image edge are not in the truth)."""
        if self._hidden(t):
            return set()
        cam = self._camera(112, 112)  # boxes in units of the image: the same at every size
        boxes = []
        for actor in self.actors:
            if actor.visible(t, self.event_start):
                x, y, z, _ = actor.position(t, self.event_start)
                if z > 0.5:
                    boxes.append((z, id(actor), _screen_box(cam, actor.kind, x, y, z)))
        boxes.sort()
        seen = set()
        for k, (z, key, box) in enumerate(boxes):
            area = _area(box)
            if area <= 0 or _area(_intersect(box, (0.0, 0.0, 112.0, 112.0))) < 0.5 * area:
                continue
            covered = max((_area(_intersect(box, other)) for _, _, other in boxes[:k]), default=0.0)
            if covered < 0.6 * area:
                seen.add(key)
        return seen

    def _hidden(self, t: float) -> bool:
        effect, level = self.effect_level(t)
        return effect == "camera_blocked" and level >= 0.5

    def truth(self, stamps: Sequence[float]) -> Truth:
        stamps = [float(s) for s in stamps]
        events = self.events_in(stamps)
        attrs = self.attributes(stamps, events)
        cats = [e["category"] for e in events]
        return Truth(seed=self.seed, family=self.family, stamps=stamps, caption=tasks.make_caption(attrs),
                     static_caption=tasks.make_caption(attrs, include_event=False), attributes=attrs,
                     qa=self._qa(attrs, cats), events=events, alert_answer=tasks.alert_answer(cats),
                     scene=self.describe())

    def _qa(self, a: dict, cats: list[str]) -> list[dict]:
        def yn(v):
            return "yes" if v else "no"

        def num(n):
            return tasks.NUMBER_WORDS[n] if n < len(tasks.NUMBER_WORDS) else str(n)

        if self.family == "road":
            answers = {"night": yn(a["time"] == "night"), "weather": a["weather"], "cars": num(a["cars"]),
                       "pedestrian": yn(a["pedestrians"]), "cyclist": yn(a["cyclists"]), "animal": yn(a["animals"]),
                       "box_road": yn(a["boxes"]), "traffic_light": yn(a["light"] != "none"),
                       "stop_sign": yn(a["sign"] == "stop")}
            if a["light"] != "none":
                answers["light_colour"] = a["light"]
        else:
            answers = {"dim": yn(a["lighting"] == "dim"), "people": num(a["people"]), "forklift": yn(a["forklifts"]),
                       "boxes_floor": num(a["boxes"])}
        for cat in tasks.categories_for(self.family):
            if cat == "red_light" and self.params.get("light", "none") == "none":
                continue
            answers[cat] = yn(cat in cats)
        qa = []
        for key, answer in answers.items():
            question, kind, temporal = tasks.QA_TEMPLATES[key]
            qa.append({"key": key, "question": question, "answer": answer, "kind": kind, "temporal": temporal})
        return qa

    def describe(self) -> dict:
        return {"seed": self.seed, "family": self.family, "duration": self.duration,
                "params": {k: (list(v) if isinstance(v, (tuple, set, frozenset)) else v) for k, v in self.params.items()
                           if k != "gaps"},
                "event": self.event.to_dict() if self.event else None,
                "actors": [{"kind": a.kind, "event_actor": a.is_event_actor} for a in self.actors]}


# -------------------------------------------------------------------------------------------------- generation
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



# ------------------------------------------------------------------------------------------------------- clips
@dataclass
class Clip:
    frames: list  # list of HxWx3 uint8 RGB
    stamps: list  # seconds within the scenario
    truth: Truth
    scenario: Scenario | None = None


def clip_window(scenario: Scenario, seed: int, num_frames: int = 8, clip_fps: float = 4.0) -> list[float]:
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


def make_clip(seed: int, family: str | None = None, num_frames: int = 8, clip_fps: float = 4.0,
              size: int | tuple[int, int] = 112, category: str | None = "auto") -> Clip:
    """A training/evaluation clip: ``num_frames`` frames at ``clip_fps`` of ``make_scenario(seed, family, category)``.

    size: an int (square) or (width, height).
    """
    scenario = make_scenario(seed, family, category)
    width, height = (size, size) if isinstance(size, int) else size
    stamps = clip_window(scenario, seed, num_frames, clip_fps)
    frames = [scenario.render(t, width, height) for t in stamps]
    return Clip(frames, stamps, scenario.truth(stamps), scenario)


# ------------------------------------------------------------------------------------------------------ splits
_SPLIT_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
_SPLIT_SIZE = 10_000_000


def split_seeds(split: str, n: int, offset: int = 0) -> list[int]:
    """``n`` seeds of a split; the ranges of train, val and test never overlap."""
    if split not in _SPLIT_BASE:
        raise ValueError(f"unknown split {split!r} (train, val, test)")
    if n < 0 or offset < 0 or offset + n > _SPLIT_SIZE:
        raise ValueError("split range exhausted")
    base = _SPLIT_BASE[split] + offset
    return list(range(base, base + n))


def split_of(seed: int) -> str:
    for name, base in _SPLIT_BASE.items():
        if base <= seed < base + _SPLIT_SIZE:
            return name
    raise ValueError(f"seed {seed} is in no split")
