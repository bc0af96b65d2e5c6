"""Out-of-world frames: noise, textures, random shapes, flat bright colours and two photograph-like kinds (fields
with a natural image's 1/f spectrum; a still life of soft-shaded objects before a graded backdrop), none of them a
road, an aisle or a lens fault (a covered camera is dark, a blurred one shows a scene). Trained to be answered
"An unfamiliar scene." with no alert, so a camera pointed at something else is not described as a road. numpy + cv2
only."""
from __future__ import annotations

import cv2
import numpy as np

KINDS = ("noise", "texture", "shapes", "flat", "natural", "still_life")
# Flat synthetic kinds alone left a photograph (a portrait, a desk) nearer the rendered worlds than any of them: the
# model described one as a road. Photographs share a 1/f amplitude spectrum and smooth shading, which these add.


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
    if kind == "natural":
        return _natural(rng, size)
    if kind == "still_life":
        return _still_life(rng, size)
    colour = rng.integers(0, 256, 3)
    colour[int(rng.integers(3))] = 255  # bright: never the dark of a covered lens
    return np.full((size, size, 3), colour, dtype=np.uint8)


def _one_over_f(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """A ``size`` x ``size`` field in [0, 1] whose amplitude falls as 1 / frequency ** ``exponent``."""
    frequency = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    frequency[0, 0] = 1.0
    spectrum = (rng.normal(size=frequency.shape) + 1j * rng.normal(size=frequency.shape)) / frequency ** exponent
    field = np.fft.irfft2(spectrum, s=(size, size))
    return (field - field.min()) / max(float(np.ptp(field)), 1e-9)


def _natural(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two 1/f fields blending three random colours: a photograph's statistics without its content."""
    colours = rng.uniform(0, 255, (3, 3))
    first, second = (_one_over_f(rng, size, rng.uniform(1.0, 1.6))[..., None] for _ in range(2))
    image = colours[0] + first * (colours[1] - colours[0]) + second * (colours[2] - colours[0]) * 0.6
    return _exposed(rng, image * rng.uniform(0.7, 1.3))


def _still_life(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two to five large, soft-shaded ellipses and polygons before a graded backdrop, slightly out of focus."""
    y, x = np.mgrid[0:size, 0:size] / size
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * x + np.sin(direction) * y)[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9)
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = low + ramp * (high - low)
    for _ in range(int(rng.integers(2, 6))):
        mask = np.zeros((size, size), np.uint8)
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        if rng.random() < 0.6:
            axes = (int(rng.integers(size // 8, size // 2)), int(rng.integers(size // 8, size // 2)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            points = rng.integers(-size // 3, size // 3, (int(rng.integers(3, 7)), 2)) + np.array(centre)
            cv2.fillPoly(mask, [points.astype(np.int32)], 1)
        light = rng.uniform(0, 2 * np.pi)
        shade = 0.55 + 0.45 * (np.cos(light) * x + np.sin(light) * y - 0.5 * (np.cos(light) + np.sin(light)) + 0.5)
        image = np.where(mask[..., None] > 0, rng.uniform(0, 255, 3) * shade[..., None], image)
    image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 2.5)))
    return _exposed(rng, image + rng.normal(0, rng.uniform(1, 6), image.shape))


def _exposed(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` partly desaturated (photographs are seldom all pure colour) and lifted so that its brightest part is
    bright: never the dark of a covered lens."""
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + (image - grey) * rng.uniform(0.3, 1.0)
    image = image + max(0.0, rng.uniform(140, 230) - float(image.max()))
    return np.clip(image, 0, 255).astype(np.uint8)


def unfamiliar_frames(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    """``count`` frames of one out-of-world view, slightly shifted from frame to frame like a handheld camera."""
    base = unfamiliar_frame(rng, size + 8)
    shifts = rng.integers(0, 9, (count, 2))
    return [np.ascontiguousarray(base[dy:dy + size, dx:dx + size]) for dy, dx in shifts]
