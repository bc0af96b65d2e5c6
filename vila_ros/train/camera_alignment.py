"""Camera-frame alignment (data type ``sim_frame_pairs``): the tower and projector learn to give a camera's frame,
squashed to the model's input by its own resize, the tokens the frozen starting model gives the square render of
the same instant.

A model trained mostly on square renders reads the node's camera frames less well than those renders (the embedded
model finds more held-out events on the square render of the same stream); the LLM already reads the square
tokens. This stage moves only what the camera changes: the LLM is untouched, and a share of out-of-world frames,
whose tokens must stay where the starting model put them (the world gate and "An unfamiliar scene." rest on them),
anchors the rest of the input space.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vila_ros.model.vila import project_frames
from vila_ros.train.data import render_sizes_of
from vila_ros.train.vision_labels import moment_near_event


class FramePairDataset:
    """(camera frame, square render) of one instant of a 20-60 s stream scene, deterministic in (seed, index); half
    the instants within 2 s of the scene's event start. ``unfamiliar`` of the time an out-of-world frame as both."""

    def __init__(self, image_processor: Any, image_size: int, render_size: Sequence[int] | Sequence[Sequence[int]],
                 split: str = "train", seed: int = 0, unfamiliar: float = 0.1) -> None:
        if not render_size:
            raise ValueError("sim_frame_pairs needs render_size: the camera frame size(s) to align to the square")
        if not 0.0 <= unfamiliar < 1.0:
            raise ValueError(f"unfamiliar must be in [0, 1): {unfamiliar}")
        self.image_processor = image_processor
        self.image_size = image_size
        self.render_sizes = render_sizes_of(render_size, image_size)
        self.split = split
        self.seed = seed
        self.unfamiliar = unfamiliar

    def frames(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(student frame, teacher frame): the camera render and the square render of one instant."""
        from vila_ros.sim import make_scenario, split_seeds
        from vila_ros.sim.unfamiliar import unfamiliar_frame

        rng = np.random.default_rng([self.seed, int(index), 6121])
        if rng.random() < self.unfamiliar:
            frame = unfamiliar_frame(rng, self.image_size)
            return frame, frame
        scene_seed = split_seeds(self.split, 1, int(rng.integers(0, 9_000_000)))[0]
        scenario = make_scenario(scene_seed, duration=float(rng.uniform(20.0, 60.0)))
        t = moment_near_event(scenario, rng)
        width, height = self.render_sizes[int(rng.integers(len(self.render_sizes)))]
        return scenario.render(t, width, height), scenario.render(t, self.image_size, self.image_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        student, teacher = self.frames(index)
        pixels = self.image_processor([student, teacher])
        return {"pixels": pixels[0], "target_pixels": pixels[1]}


class AlignedTower(nn.Module):
    """The model's tower and projector (trained) beside a frozen copy of both as they were at the start (the
    teacher); ``forward(batch)`` -> (loss, metrics): the mean squared difference of the projector's tokens in units
    of the teacher tokens' variance, so 1.0 is as far as guessing the mean token. The teacher is the training
    state saved with a checkpoint, so a resumed stage aligns to the weights it started from."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.teacher_tower = copy.deepcopy(model.vision_tower).requires_grad_(False).eval()
        self.teacher_projector = copy.deepcopy(model.mm_projector).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "AlignedTower":
        # The trainer puts its module in training mode; the teacher stays as it was frozen.
        super().train(mode)
        self.teacher_tower.eval()
        self.teacher_projector.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            target = project_frames(self.teacher_tower, self.teacher_projector, batch["target_pixels"]).float()
        student = project_frames(self.model.vision_tower, self.model.mm_projector, batch["pixels"]).float()
        scale = target.var(dim=(0, 1)).mean().clamp_min(1e-6)
        loss = (student - target).pow(2).mean() / scale
        with torch.no_grad():
            cosine = torch.nn.functional.cosine_similarity(student, target, dim=-1).mean()
        return loss, {"token_cosine": float(cosine)}

    def training_state(self) -> dict[str, torch.Tensor]:
        state = {f"teacher_tower.{k}": v for k, v in self.teacher_tower.state_dict().items()}
        state.update({f"teacher_projector.{k}": v for k, v in self.teacher_projector.state_dict().items()})
        return {k: v.detach().clone().contiguous() for k, v in state.items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        unexpected = self.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"unexpected teacher tensors: {unexpected[:3]}")
