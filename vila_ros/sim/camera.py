"""Projection: world metres (x right, y up, z forward from the camera) to pixels, and fixed-point cv2 drawing.

Focal lengths are multiples of the image width and height (``fx = f W``, ``fy = f H``): a render at any size, squashed
to a square, matches the square render, so a 640x480 bag frame resized to 112x112 looks like the training frames.
Shapes are drawn with ``SHIFT`` sub-pixel bits so that far, small actors move smoothly instead of in whole pixels.
``screen_box`` is the image rectangle an actor covers, which the truth uses to decide what the camera shows.
"""
from __future__ import annotations

import cv2
import numpy as np

SHIFT = 4  # sub-pixel bits for cv2 shapes
SUBPIXEL = float(1 << SHIFT)

# (width, height) in metres of what the actor painters draw, base at the actor's y
ACTOR_SIZE = {"car": (1.9, 1.55), "pedestrian": (0.5, 1.9), "person": (0.5, 1.9), "cyclist": (1.5, 1.8),
              "animal": (1.8, 1.8), "box": (0.8, 0.8), "forklift": (1.25, 2.6)}


class Camera:
    """A pinhole camera at ``cam_height`` metres looking along z, with the horizon at ``horizon`` of the height."""

    def __init__(self, width: int, height: int, horizon: float, cam_height: float, focal: float = 1.0):
        self.w, self.h = width, height
        self.fx, self.fy = focal * width, focal * height
        self.cx, self.vh = width / 2.0, horizon * height
        self.cam_h = cam_height

    @classmethod
    def for_params(cls, params: dict, width: int, height: int) -> "Camera":
        """The camera of a scenario's ``params`` (``horizon``, ``cam_height``, ``focal``) at one image size."""
        return cls(width, height, params["horizon"], params["cam_height"], params["focal"])

    def proj(self, x: float, y: float, z: float) -> tuple[float, float]:
        z = max(z, 0.3)
        return self.cx + self.fx * x / z, self.vh + self.fy * (self.cam_h - y) / z

    def poly(self, img: np.ndarray, pts3d, colour) -> None:
        pts = np.array([self.proj(*p) for p in pts3d], dtype=np.float64)
        cv2.fillPoly(img, [np.round(pts * SUBPIXEL).astype(np.int32)], colour, cv2.LINE_8, SHIFT)

    def rect(self, img: np.ndarray, u0: float, v0: float, u1: float, v1: float, colour) -> None:
        pts = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
        cv2.fillPoly(img, [np.round(pts * SUBPIXEL).astype(np.int32)], colour, cv2.LINE_8, SHIFT)

    def circle(self, img: np.ndarray, u: float, v: float, r: float, colour, thickness: float = -1) -> None:
        cv2.circle(img, (int(round(u * SUBPIXEL)), int(round(v * SUBPIXEL))),
                   max(int(round(r * SUBPIXEL)), 1 << SHIFT - 1), colour,
                   thickness if thickness < 0 else max(1, int(round(thickness))), cv2.LINE_8, SHIFT)

    def line(self, img: np.ndarray, p0, p1, colour, thickness: float) -> None:
        cv2.line(img, (int(round(p0[0] * SUBPIXEL)), int(round(p0[1] * SUBPIXEL))),
                 (int(round(p1[0] * SUBPIXEL)), int(round(p1[1] * SUBPIXEL))),
                 colour, max(1, int(round(thickness))), cv2.LINE_8, SHIFT)

    def scale(self, z: float) -> tuple[float, float]:
        """Pixels per metre (horizontal, vertical) at depth z."""
        z = max(z, 0.3)
        return self.fx / z, self.fy / z


def screen_box(cam: Camera, kind: str, x: float, y: float, z: float) -> tuple[float, float, float, float]:
    """(u0, v0, u1, v1) of what the painter of ``kind`` draws for an actor at (x, y, z)."""
    width, height = ACTOR_SIZE[kind]
    u, v = cam.proj(x, y, z)
    sx, sy = cam.scale(z)
    return u - width * sx / 2, v - height * sy, u + width * sx / 2, v


def intersect(a: tuple, b: tuple) -> tuple[float, float, float, float]:
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def area(box: tuple) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
