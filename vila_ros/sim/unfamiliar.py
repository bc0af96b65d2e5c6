"""Out-of-world frames: noise, textures, random shapes and flat bright colours, none of them a road, an aisle or a
lens fault (a covered camera is dark, a blurred one shows a scene). Trained to be answered "An unfamiliar scene."
with no alert, so a camera pointed at something else is not described as a road. numpy + cv2 only."""
from __future__ import annotations

import cv2
import numpy as np

KINDS = ("noise", "texture", "shapes", "flat")


def unfamiliar_frame(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """One ``size`` x ``size`` RGB uint8 frame of ``kind`` (drawn from ``KINDS`` when None)."""
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind == "noise":
        cell = int(rng.integers(1, 9))
        small = rng.integers(0, 256, (size // cell + 1, size // cell + 1, 3), dtype=np.uint8)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)
    if kind == "texture":
        y, x = np.mgrid[0:size, 0:size] / size
        waves = [np.sin(2 * np.pi * (rng.uniform(1, 12) * x * np.cos(a) + rng.uniform(1, 12) * y * np.sin(a)))
                 for a in rng.uniform(0, np.pi, 3)]
        return ((np.stack(waves, -1) * 0.5 + 0.5) * rng.uniform(120, 255, 3)).astype(np.uint8)
    if kind == "shapes":
        img = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(3, 12))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            p = rng.integers(0, size, 4)
            if rng.random() < 0.5:
                cv2.circle(img, (int(p[0]), int(p[1])), int(rng.integers(2, size // 3)), colour, -1)
            else:
                cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, -1)
        return img
    colour = rng.integers(0, 256, 3)
    colour[int(rng.integers(3))] = 255  # bright: never the dark of a covered lens
    return np.full((size, size, 3), colour, dtype=np.uint8)


def unfamiliar_frames(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    """``count`` frames of one out-of-world view, slightly shifted from frame to frame like a handheld camera."""
    base = unfamiliar_frame(rng, size + 8)
    shifts = rng.integers(0, 9, (count, 2))
    return [np.ascontiguousarray(base[dy:dy + size, dx:dx + size]) for dy, dx in shifts]
