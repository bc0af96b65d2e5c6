"""Actor painters: a car, a walker, a cyclist, an animal, a box and a forklift drawn at a depth with a camera.

Each painter draws an actor whose ground point is at (x, 0, z) (a box at (x, y, z)) about ``camera.ACTOR_SIZE`` of
its kind, darkened by ``shade`` (night, dim light), with lamps that glow at night and legs that swing while the
actor moves. ``draw_actor`` picks the painter of an actor's kind.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from vila_ros.sim.actors import SKIN, Actor
from vila_ros.sim.camera import SHIFT, SUBPIXEL, Camera


def shaded(colour, k: float) -> tuple[int, int, int]:
    """``colour`` with every channel scaled by ``k`` (truncated to int)."""
    return (int(colour[0] * k), int(colour[1] * k), int(colour[2] * k))


def draw_actor(img: np.ndarray, cam: Camera, actor: Actor, x: float, y: float, z: float, moving: bool, t: float,
               shade: float, night: bool) -> None:
    """Paint ``actor`` at its position (x, y, z) at time ``t``."""
    k = actor.kind
    if k == "car":
        draw_car(img, cam, x, z, actor.colour, actor.facing, shade, night)
    elif k in ("pedestrian", "person"):
        draw_walker(img, cam, x, z, actor.colour, shade, t, moving, vest=(k == "person"))
    elif k == "cyclist":
        draw_cyclist(img, cam, x, z, actor.colour, shade, t)
    elif k == "animal":
        draw_animal(img, cam, x, z, actor.colour, actor.facing, shade, t, moving)
    elif k == "box":
        draw_box(img, cam, x, y, z, actor.colour, shade)
    elif k == "forklift":
        draw_forklift(img, cam, x, z, actor.colour, actor.facing, shade, night)


def draw_car(img: np.ndarray, cam: Camera, x: float, z: float, colour: tuple, facing: str, shade: float,
             night: bool) -> None:
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    w, h = 1.9 * sx, 1.55 * sy
    body = shaded(colour, shade)
    cam.rect(img, u - w * 0.46, vb - h * 0.22, u - w * 0.28, vb, (15, 15, 15))  # wheels
    cam.rect(img, u + w * 0.28, vb - h * 0.22, u + w * 0.46, vb, (15, 15, 15))
    cam.rect(img, u - w / 2, vb - h * 0.62, u + w / 2, vb - h * 0.12, body)
    cam.rect(img, u - w * 0.38, vb - h, u + w * 0.38, vb - h * 0.6, body)
    cam.rect(img, u - w * 0.31, vb - h * 0.93, u + w * 0.31, vb - h * 0.64, shaded((40, 50, 70), shade))
    lamp = (255, 25, 25) if facing == "rear" else (255, 250, 200)
    lw, lh = w * 0.16, h * 0.12
    r = max(lw, lh) * (1.1 if night else 0.0)
    for cu in (u - w * 0.38, u + w * 0.38):
        if night:
            cam.circle(img, cu, vb - h * 0.42, r, shaded(lamp, 0.75))
        cam.rect(img, cu - lw / 2, vb - h * 0.48, cu + lw / 2, vb - h * 0.36, lamp)


def draw_walker(img: np.ndarray, cam: Camera, x: float, z: float, colour: tuple, shade: float, t: float, moving: bool,
                vest: bool = False) -> None:
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    h = 1.75 * sy
    w = 0.5 * sx
    legs = shaded((35, 35, 60), shade)
    swing = 0.18 * sx * math.sin(t * 9.0) if moving else 0.0
    lt = max(1.0, 0.16 * sx)
    cam.line(img, (u - w * 0.2, vb - h * 0.47), (u - w * 0.2 + swing, vb), legs, lt)
    cam.line(img, (u + w * 0.2, vb - h * 0.47), (u + w * 0.2 - swing, vb), legs, lt)
    cam.rect(img, u - w / 2, vb - h * 0.82, u + w / 2, vb - h * 0.45, shaded(colour, shade))
    if vest:
        cam.rect(img, u - w / 2, vb - h * 0.66, u + w / 2, vb - h * 0.6, shaded((235, 235, 235), shade))
    cam.circle(img, u, vb - h * 0.9, 0.13 * sy * 1.2, shaded(SKIN, shade))


def draw_cyclist(img: np.ndarray, cam: Camera, x: float, z: float, colour: tuple, shade: float, t: float) -> None:
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    r = 0.36 * sy
    dark = shaded((20, 20, 20), shade)
    th = max(1.0, 0.08 * sx)
    for cu in (u - 0.55 * sx, u + 0.55 * sx):
        cam.circle(img, cu, vb - r, r, dark, th)
    cam.line(img, (u - 0.55 * sx, vb - r), (u, vb - 2.0 * r), shaded((200, 200, 210), shade), th)
    cam.line(img, (u, vb - 2.0 * r), (u + 0.55 * sx, vb - r), shaded((200, 200, 210), shade), th)
    cam.rect(img, u - 0.22 * sx, vb - 1.55 * sy, u + 0.22 * sx, vb - 0.95 * sy, shaded(colour, shade))
    cam.line(img, (u, vb - 0.95 * sy), (u + 0.1 * sx * math.sin(t * 6), vb - 2.0 * r), shaded((35, 35, 60), shade), th)
    cam.circle(img, u + 0.05 * sx, vb - 1.68 * sy, 0.14 * sy * 1.2, shaded((250, 250, 250), shade))


def draw_animal(img: np.ndarray, cam: Camera, x: float, z: float, colour: tuple, facing: str, shade: float, t: float,
                moving: bool) -> None:
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    d = 1.0 if facing == "right" else -1.0
    body = shaded(colour, shade)
    bl, bh = 1.6 * sx, 0.6 * sy
    lt = max(1.0, 0.12 * sx)
    swing = 0.15 * sx * math.sin(t * 10.0) if moving else 0.0
    for k, lu in enumerate((u - bl * 0.38, u - bl * 0.22, u + bl * 0.22, u + bl * 0.38)):
        sw = swing if k % 2 == 0 else -swing
        cam.line(img, (lu, vb - 0.75 * sy), (lu + sw, vb), body, lt)
    cv2.ellipse(img, (int(round(u * SUBPIXEL)), int(round((vb - 0.95 * sy) * SUBPIXEL))),
                (max(int(round(bl / 2 * SUBPIXEL)), 8), max(int(round(bh / 2 * SUBPIXEL)), 8)), 0, 0, 360, body, -1,
                cv2.LINE_8, SHIFT)
    nu, nv = u + d * bl * 0.5, vb - 1.1 * sy
    cam.line(img, (nu - d * 0.08 * sx, nv), (nu + d * 0.2 * sx, vb - 1.6 * sy), body, max(1.0, 0.2 * sx))
    cam.circle(img, nu + d * 0.3 * sx, vb - 1.65 * sy, 0.17 * sy * 1.3, body)
    cam.circle(img, u - d * bl * 0.5, vb - 1.05 * sy, 0.09 * sy * 1.3, shaded((245, 245, 245), shade))


def draw_box(img: np.ndarray, cam: Camera, x: float, y: float, z: float, colour: tuple, shade: float,
             size: float = 0.8) -> None:
    half = size / 2
    front = shaded(colour, shade)
    top = shaded(tuple(min(255, c + 35) for c in colour), shade)
    cam.poly(img, [(x - half, y + size * 0.75, z + size), (x + half, y + size * 0.75, z + size),
                   (x + half, y + size * 0.75, z), (x - half, y + size * 0.75, z)], top)
    cam.poly(img, [(x - half, y, z), (x + half, y, z), (x + half, y + size * 0.75, z), (x - half, y + size * 0.75, z)],
             front)
    cam.poly(img, [(x - 0.06, y, z), (x + 0.06, y, z), (x + 0.06, y + size * 0.75, z), (x - 0.06, y + size * 0.75, z)],
             shaded((235, 215, 160), shade))


def draw_forklift(img: np.ndarray, cam: Camera, x: float, z: float, colour: tuple, facing: str, shade: float,
                  night: bool) -> None:
    sx, sy = cam.scale(z)
    u, vb = cam.proj(x, 0.0, z)
    w = 1.25 * sx
    body = shaded(colour, shade)
    dark = shaded((25, 25, 25), shade)
    cam.rect(img, u - w * 0.5, vb - 0.3 * sy, u - w * 0.3, vb, dark)
    cam.rect(img, u + w * 0.3, vb - 0.3 * sy, u + w * 0.5, vb, dark)
    cam.rect(img, u - w / 2, vb - 1.2 * sy, u + w / 2, vb - 0.2 * sy, body)
    th = max(1.0, 0.1 * sx)
    cam.line(img, (u - w * 0.45, vb - 1.2 * sy), (u - w * 0.45, vb - 2.2 * sy), dark, th)  # overhead guard
    cam.line(img, (u + w * 0.45, vb - 1.2 * sy), (u + w * 0.45, vb - 2.2 * sy), dark, th)
    cam.line(img, (u - w * 0.45, vb - 2.2 * sy), (u + w * 0.45, vb - 2.2 * sy), dark, th)
    if facing == "front":
        cam.rect(img, u - w * 0.32, vb - 2.6 * sy, u - w * 0.2, vb - 0.1 * sy, shaded((60, 60, 60), shade))  # mast
        cam.rect(img, u + w * 0.2, vb - 2.6 * sy, u + w * 0.32, vb - 0.1 * sy, shaded((60, 60, 60), shade))
        cam.rect(img, u - w * 0.4, vb - 0.18 * sy, u + w * 0.4, vb - 0.05 * sy, shaded((170, 170, 175), shade))
        lamp = (255, 250, 200)
    else:
        cam.rect(img, u - w * 0.5, vb - 0.75 * sy, u + w * 0.5, vb - 0.2 * sy, dark)  # counterweight
        lamp = (255, 30, 30)
    for cu in (u - w * 0.36, u + w * 0.36):
        cam.circle(img, cu, vb - 1.0 * sy, 0.09 * sy * (2.0 if night else 1.2), lamp)
