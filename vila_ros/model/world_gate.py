"""Whether a frame shows the world a model was trained on: the Mahalanobis distance of its image features (the
projector's output, averaged over the frame's tokens) from the features of the model's own training renders.

A small model trained on a simulator answers about a road or an aisle whatever it is shown: the embedded model
describes a portrait photograph as "A road in the day. Three cars, a pedestrian, ...". Its features tell otherwise:
rendered scenes of the validation split lie at most 23.8 from the training renders' mean, out-of-world frames
(noise, textures, shapes) 32 and more, real photographs 39-64. The node describes a window whose newest frame lies
beyond the stored threshold as an unfamiliar scene and raises no scene alert on it (`ros/worker.py`; a covered or
blurred lens is checked on any view). The statistics and threshold are fitted by `vila-ros fit-world-gate`
(`train/world_gate_fit.py`) and stored with the model (WORLD_GATE_FILE, safetensors); a checkpoint without the file
(any VILA checkpoint) has no gate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vila_ros.resources import WORLD_GATE_FILE  # noqa: F401 - where the gate is stored with a model


@dataclass(frozen=True, eq=False)  # identity equality: tensors have no single truth value to compare
class WorldGate:
    mean: torch.Tensor  # [hidden]
    precision: torch.Tensor  # [hidden, hidden]: the inverse of the (regularised) covariance
    threshold: float  # distances above it are out of the world

    @classmethod
    def fit(cls, features: torch.Tensor, threshold: float, ridge: float = 1e-3) -> "WorldGate":
        """From per-frame pooled features [N, hidden] of in-world frames; `ridge` keeps the covariance invertible
        where a direction never varies in the renders."""
        features = features.double()
        mean = features.mean(0)
        centred = features - mean
        covariance = centred.T @ centred / max(len(features) - 1, 1)
        covariance += ridge * torch.eye(features.shape[1], dtype=torch.float64)
        return cls(mean.float(), torch.linalg.inv(covariance).float(), float(threshold))

    @staticmethod
    def pooled(frame_features: torch.Tensor) -> torch.Tensor:
        """A frame's [tokens, hidden] features (or [N, tokens, hidden]) -> [hidden] ([N, hidden])."""
        return frame_features.float().mean(-2)

    def distances(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each row of [N, hidden] pooled features."""
        centred = pooled.float() - self.mean
        return torch.einsum("nd,de,ne->n", centred, self.precision, centred).clamp_min(0).sqrt()

    def distance(self, frame_features: torch.Tensor) -> float:
        """Distance of one frame's [tokens, hidden] features."""
        return float(self.distances(self.pooled(frame_features)[None])[0])

    def is_unfamiliar(self, frame_features: torch.Tensor) -> bool:
        return self.distance(frame_features) > self.threshold

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({"mean": self.mean.contiguous(), "precision": self.precision.contiguous()}, str(path),
                  metadata={"threshold": repr(self.threshold)})

    @classmethod
    def load(cls, path: str | Path) -> "WorldGate":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                threshold = float((handle.metadata() or {})["threshold"])
                mean, precision = handle.get_tensor("mean"), handle.get_tensor("precision")
        except (OSError, KeyError, ValueError, SafetensorError) as error:
            raise ValueError(f"world gate {path}: {error!r}") from None
        if mean.dim() != 1 or precision.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"world gate {path}: mean {tuple(mean.shape)} and precision {tuple(precision.shape)} "
                             "do not fit together")
        return cls(mean.float(), precision.float(), threshold)
