"""Image preprocessing of a SigLIP tower, from ``vision_tower/preprocessor_config.json``, for numpy frames.

Steps, as HF's SiglipImageProcessor and VILA's ``process_image`` do them: optional pad-to-square with the mean colour
(VILA's ``image_aspect_ratio: pad``), resize to the tower's square size without keeping the aspect ratio, 1/255
rescale, mean/std normalisation. Three resizes:

- ``pil`` (the default for every checkpoint whose preprocessor_config.json does not name another): PIL's resize with
  the config's ``resample`` filter (3 = bicubic for SigLIP), on the uint8 RGB image, exactly what the checkpoint's
  own processor computes. PIL's bicubic widens its support when shrinking, i.e. it antialiases.
- ``opencv``: cv2 INTER_AREA when shrinking (cv2's INTER_CUBIC does not antialias and would alias 1080p frames),
  the config's filter when enlarging. About 3x faster on 1080p frames, but not the same pixels: docs/checkpoints.md
  has its largest deviation and its effect on answers. A checkpoint trained on it names it in its
  preprocessor_config.json (``"vila_ros_resize": "opencv"``), as the embedded default model does.
- ``nearest``: when shrinking, the frame's pixel under each output pixel's centre, no filter: what a renderer that
  point-samples its shapes (the simulator's cv2 drawing) gives when it draws at the tower's size. For models trained
  on such renders; it aliases a real camera's fine detail. Enlarging uses the config's filter, as ``opencv`` does.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from vila_ros.model.config import RESIZES

RESIZE_KEY = "vila_ros_resize"  # preprocessor_config.json key naming the resize a checkpoint was trained with
_CV2_INTERP = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LANCZOS4, 2: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}


@dataclasses.dataclass
class ImageProcessor:
    size: int = 384
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    resample: int = 3  # PIL.Image.BICUBIC
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    # VILA's image_aspect_ratio: "resize" | "pad" | "dynamic" (NVILA: each tile, or each of several images, is resized)
    aspect_ratio: str = "resize"
    resize: str = "pil"  # "pil": the checkpoint's own processor, exactly; "opencv": faster, close (module docstring)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    # -- preprocessor_config.json ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], aspect_ratio: str = "resize") -> "ImageProcessor":
        size = data.get("size", 384)
        if isinstance(size, dict):
            if "height" in size and size["height"] != size.get("width", size["height"]):
                raise ValueError(f"non-square tower input {size} is not supported")
            size = size.get("height") or size.get("shortest_edge")
        known = {"size", "image_mean", "image_std", "rescale_factor", "resample", "do_resize", "do_rescale",
                 "do_normalize", RESIZE_KEY}
        resize = str(data.get(RESIZE_KEY, "pil"))
        if resize not in RESIZES:
            raise ValueError(f"{RESIZE_KEY} {resize!r}: expected one of {', '.join(RESIZES)}")
        return cls(
            size=int(size),
            image_mean=tuple(float(x) for x in data.get("image_mean", (0.5, 0.5, 0.5))),
            image_std=tuple(float(x) for x in data.get("image_std", (0.5, 0.5, 0.5))),
            rescale_factor=float(data.get("rescale_factor", 1 / 255)),
            resample=int(data.get("resample", 3)),
            do_resize=bool(data.get("do_resize", True)),
            do_rescale=bool(data.get("do_rescale", True)),
            do_normalize=bool(data.get("do_normalize", True)),
            aspect_ratio=aspect_ratio,
            resize=resize,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"image_processor_type": "SiglipImageProcessor"}
        out.update(self.extra)
        out.update(
            size={"height": self.size, "width": self.size},
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
            rescale_factor=self.rescale_factor,
            resample=self.resample,
            do_resize=self.do_resize,
            do_rescale=self.do_rescale,
            do_normalize=self.do_normalize,
        )
        if self.resize != "pil":  # public checkpoints' files stay as they are
            out[RESIZE_KEY] = self.resize
        return out

    def with_resize(self, resize: str | None) -> "ImageProcessor":
        """This processor with another resize (None: unchanged)."""
        if resize is None or resize == self.resize:
            return self
        if resize not in RESIZES:
            raise ValueError(f"unknown resize {resize!r}; known: {', '.join(RESIZES)}")
        return dataclasses.replace(self, resize=resize)

    @classmethod
    def load(cls, path: str | Path, aspect_ratio: str = "resize") -> "ImageProcessor":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), aspect_ratio=aspect_ratio)

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    # -- pixels ---------------------------------------------------------------------------------------------------
    def pad_colour(self) -> tuple[int, int, int]:
        # VILA's expand2square fills with int(mean * 255): (127, 127, 127) for SigLIP's 0.5.
        return tuple(int(m * 255) for m in self.image_mean)  # type: ignore[return-value]

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """One frame -> size x size x 3 uint8 RGB (pad/resize only; no normalisation yet)."""
        img = _as_rgb_uint8(frame)
        if self.aspect_ratio == "pad":
            h, w = img.shape[:2]
            if h != w:
                side = max(h, w)
                top, left = (side - h) // 2, (side - w) // 2
                img = cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT,
                                         value=self.pad_colour())
        if self.do_resize and img.shape[:2] != (self.size, self.size):
            if self.resize == "pil":
                from PIL import Image

                img = np.asarray(Image.fromarray(img).resize((self.size, self.size), resample=self.resample))
            else:
                shrinking = img.shape[0] > self.size or img.shape[1] > self.size
                interp = _CV2_INTERP.get(self.resample, cv2.INTER_CUBIC)
                if shrinking:  # INTER_NEAREST_EXACT: the pixel under each centre, as PIL's NEAREST picks it
                    interp = cv2.INTER_NEAREST_EXACT if self.resize == "nearest" else cv2.INTER_AREA
                img = cv2.resize(img, (self.size, self.size), interpolation=interp)
        return img

    def __call__(self, frames: Sequence[np.ndarray]) -> "Any":
        """Frames -> float32 Tensor[N, 3, size, size], normalised as the tower expects."""
        import torch

        batch = np.stack([self.prepare(f) for f in frames])  # [N, S, S, 3] uint8
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        if self.do_rescale:
            x.mul_(self.rescale_factor)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
            std = torch.tensor(self.image_std).view(1, 3, 1, 1)
            x.sub_(mean).div_(std)
        return x.contiguous()


def _as_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 RGB arrays, got dtype {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3])
    raise ValueError(f"frames must be HxWx3 RGB, got shape {arr.shape}")
