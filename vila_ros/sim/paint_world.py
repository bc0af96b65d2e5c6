"""The world behind and over the actors: road and warehouse backgrounds, lane markings and the traffic light, rain,
fog, and what a blocked or blurred camera does to a frame.

Backgrounds are static per scenario and image size (``Scenario`` caches them); lane dashes move with the car's
speed and the traffic light shows the scenario's light state at each frame. The warehouse's shelf boxes come from
their own generator seeded by the scenario seed, so they never change the draws of scenario generation.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from vila_ros.sim.actors import BOX_COLOURS
from vila_ros.sim.camera import SHIFT, SUBPIXEL, Camera
from vila_ros.sim.paint_actors import shaded

LIGHT_Z = 13.0  # depth of the traffic light over our lane


def background(family: str, params: dict, seed: int, width: int, height: int) -> tuple[np.ndarray, Camera]:
    """The static background of a scenario at one image size, and the camera it was drawn with."""
    cam = Camera.for_params(params, width, height)
    img = np.zeros((height, width, 3), np.uint8)
    if family == "road":
        road_background(img, cam, params)
    else:
        warehouse_background(img, cam, params, seed)
    return img, cam


def road_background(img: np.ndarray, cam: Camera, params: dict) -> None:
    """Sky, grass, sidewalks, the road with its fixed lines, the road sign and the traffic light's frame."""
    night = params["time"] == "night"
    k = 0.45 if night else 1.0
    hor = int(round(cam.vh))
    img[:hor] = (15, 20, 48) if night else (120, 180, 235)
    img[hor:] = shaded((70, 135, 55), k)
    far = 250.0
    cam.poly(img, [(-7.0, 0, 1.0), (7.0, 0, 1.0), (7.0, 0, far), (-7.0, 0, far)], shaded((165, 160, 155), k))
    cam.poly(img, [(-4.5, 0, 1.0), (4.5, 0, 1.0), (4.5, 0, far), (-4.5, 0, far)],
             (40, 40, 45) if night else (85, 85, 90))
    for x0, x1, colour in ((-1.66, -1.54, (240, 200, 30)), (-1.46, -1.34, (240, 200, 30)),
                           (4.25, 4.4, (235, 235, 235)), (-4.4, -4.25, (235, 235, 235))):
        cam.poly(img, [(x0, 0, 1.0), (x1, 0, 1.0), (x1, 0, far), (x0, 0, far)], shaded(colour, 0.8 if night else 1))
    if params["sign"] != "none":
        z, x = 14.0, -5.8
        u, vb = cam.proj(x, 0.0, z)
        sx, sy = cam.scale(z)
        cam.rect(img, u - 0.06 * sx, vb - 2.6 * sy, u + 0.06 * sx, vb, shaded((120, 120, 120), k))
        cu, cv_, r = u, vb - 3.0 * sy, 0.8 * sy
        if params["sign"] == "stop":
            ang = np.deg2rad(22.5 + 45.0 * np.arange(8))
            pts = np.stack([cu + r * np.cos(ang) * sx / sy, cv_ + r * np.sin(ang)], 1)
            cv2.fillPoly(img, [np.round(pts * SUBPIXEL).astype(np.int32)], shaded((210, 20, 20), max(k, 0.7)),
                         cv2.LINE_8, SHIFT)
            cam.rect(img, cu - 0.45 * sx, cv_ - 0.1 * sy, cu + 0.45 * sx, cv_ + 0.1 * sy, (240, 240, 240))
        else:
            cam.circle(img, cu, cv_, r, shaded((210, 20, 20), max(k, 0.7)))
            cam.circle(img, cu, cv_, r * 0.72, shaded((245, 245, 245), max(k, 0.7)))
            cam.rect(img, cu - 0.35 * sx, cv_ - 0.25 * sy, cu + 0.35 * sx, cv_ + 0.25 * sy, (20, 20, 20))
    if params["light"] != "none":
        z = LIGHT_Z
        grey = shaded((90, 90, 95), k)
        for pts in ([(5.2, 0, z), (5.45, 0, z), (5.45, 5.7, z), (5.2, 5.7, z)],
                    [(-0.55, 5.4, z), (5.45, 5.4, z), (5.45, 5.7, z), (-0.55, 5.7, z)]):
            cam.poly(img, pts, grey)
        cam.poly(img, [(-0.55, 2.85, z), (0.55, 2.85, z), (0.55, 5.4, z), (-0.55, 5.4, z)], (25, 25, 25))


def road_markings(img: np.ndarray, cam: Camera, params: dict, t: float, state: str, night: bool) -> None:
    """The lane dashes at time ``t`` (they move at the car's speed) and the traffic light showing ``state``."""
    offset = (params["speed"] * t) % 9.0
    colour = shaded((235, 235, 235), 0.8 if night else 1.0)
    z = 2.0 - offset
    while z < 70.0:
        z0, z1 = max(z, 1.0), z + 3.0
        if z1 > 1.0:
            cam.poly(img, [(1.43, 0, z0), (1.57, 0, z0), (1.57, 0, z1), (1.43, 0, z1)], colour)
        z += 9.0
    if state != "none":
        z = LIGHT_Z
        sx, sy = cam.scale(z)
        u = cam.proj(0.0, 0.0, z)[0]
        for name, y, on in (("red", 4.85, (255, 30, 30)), ("yellow", 4.1, (255, 200, 0)),
                            ("green", 3.35, (30, 230, 60))):
            v = cam.proj(0.0, y, z)[1]
            lit = state == name
            if lit and night:
                cam.circle(img, u, v, 0.5 * sy, shaded(on, 0.6))
            cam.circle(img, u, v, 0.34 * sy, on if lit else (55, 55, 55))


def warehouse_background(img: np.ndarray, cam: Camera, params: dict, seed: int) -> None:
    """Floor, back wall, ceiling lamps and the shelves on both sides (with gaps at the cross aisles)."""
    k = 0.6 if params["lighting"] == "dim" else 1.0
    hor = int(round(cam.vh))
    img[:hor] = shaded((70, 72, 80), k)
    img[hor:] = shaded((70, 72, 80), k)
    far = 36.0
    cam.poly(img, [(-2.7, 0, far), (2.7, 0, far), (2.7, 5.0, far), (-2.7, 5.0, far)], shaded((160, 160, 165), k))
    cam.poly(img, [(-2.7, 0, 0.5), (2.7, 0, 0.5), (2.7, 0, far), (-2.7, 0, far)], shaded((150, 145, 135), k))
    for x0 in (-1.4, 1.28):
        cam.poly(img, [(x0, 0, 0.5), (x0 + 0.12, 0, 0.5), (x0 + 0.12, 0, far), (x0, 0, far)],
                 shaded((240, 200, 20), k))
    for zl in np.arange(3.0, far, 4.0):
        cam.poly(img, [(-0.3, 5.0, zl), (0.3, 5.0, zl), (0.3, 5.0, zl + 1.2), (-0.3, 5.0, zl + 1.2)],
                 (255, 255, 235) if k == 1.0 else (200, 200, 170))
    bay = 2.7
    rng = np.random.default_rng([seed, 7])
    for side in (-1.0, 1.0):
        xf, xb = side * 1.5, side * 2.7
        nb = int(far // bay)
        for i in range(nb - 1, -1, -1):  # far to near
            z0, z1 = 1.0 + i * bay, 1.0 + (i + 1) * bay
            if (side, i) in params["gaps"]:
                cam.poly(img, [(xb, 0, z0), (xb, 4.6, z0), (xb, 4.6, z1), (xb, 0, z1)], shaded((95, 95, 105), k))
                cam.poly(img, [(xf, 0, z0), (xb, 0, z0), (xb, 0, z1), (xf, 0, z1)], shaded((140, 135, 125), k))
                continue
            cam.poly(img, [(xf, 0, z0), (xf, 4.4, z0), (xf, 4.4, z1), (xf, 0, z1)], shaded((40, 36, 36), k))
            for level in (0.15, 1.6, 3.05):
                zc = z0 + 0.12
                while zc < z1 - 0.5:
                    bw = rng.uniform(0.5, 1.1)
                    bh = rng.uniform(0.6, 1.15)
                    if rng.random() < 0.85:
                        colour = BOX_COLOURS[int(rng.integers(len(BOX_COLOURS)))]
                        ze = min(zc + bw, z1 - 0.1)
                        cam.poly(img, [(xf, level, zc), (xf, level + bh, zc), (xf, level + bh, ze), (xf, level, ze)],
                                 shaded(colour, k * rng.uniform(0.8, 1.0)))
                    zc += bw + 0.1
                cam.poly(img, [(xf, level - 0.12, z0), (xf, level, z0), (xf, level, z1), (xf, level - 0.12, z1)],
                         shaded((235, 120, 20), k))
            for zu in (z0, z1 - 0.12):
                cam.poly(img, [(xf, 0, zu), (xf, 4.4, zu), (xf, 4.4, zu + 0.12), (xf, 0, zu + 0.12)],
                         shaded((30, 70, 190), k))



def draw_rain(img: np.ndarray, streaks: np.ndarray, t: float) -> None:
    """Rain streaks at time ``t``: ``streaks`` are normalised start positions (N x 2) that fall and drift."""
    h, w = img.shape[:2]
    px = min(w, h) / 112.0
    xs = (streaks[:, 0] + 0.15 * t) % 1.0 * w
    ys = (streaks[:, 1] + 1.7 * t) % 1.0 * h
    colour = (170, 175, 190)
    length = 0.09 * h
    for x, y in zip(xs, ys):
        cv2.line(img, (int(x), int(y)), (int(x - 0.15 * length), int(y + length)), colour, max(1, int(px)))


def fog_layer(horizon: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(fog, alpha) to blend as ``img * (1 - alpha) + fog``: thick at the horizon, thinning towards the bottom."""
    v = (np.arange(height, dtype=np.float32) + 0.5) / height
    depth = np.clip((v - horizon) / (1.0 - horizon), 0.0, 1.0)
    alpha = np.where(v < horizon, 0.6, 0.6 * (1.0 - depth) ** 2).astype(np.float32)[:, None, None]
    fog = alpha * np.array((185, 188, 192), np.float32)
    return fog, alpha


def camera_effect(img: np.ndarray, effect: str | None, level: float,
                  occluder: tuple[float, float] | None) -> np.ndarray:
    """A blocked camera (a dark disc growing from ``occluder``, normalised image coordinates) or a blurred one at
    ``level`` in [0, 1]; returns the frame (a new array when blurred)."""
    height, width = img.shape[:2]
    if effect == "camera_blocked" and level > 0:
        eu, ev = occluder
        r = level * 1.5 * math.hypot(width, height)
        cv2.circle(img, (int(eu * width), int(ev * height)), max(1, int(r)), (28, 22, 18), -1)
    elif effect == "camera_blurred" and level > 0:
        sigma = level * 0.045 * min(width, height)
        if sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img
