"""Supervised pretraining of the vision tower on simulator frames (the ``vision`` stage, data type ``sim_frames``).

VILA starts from a pretrained SigLIP; a tower trained from scratch only through the LLM's next-token loss learns to
see slowly (the first default model read weather and time of day but counted cars at chance). This stage gives the
tower (and the projector) a direct signal from the simulator's ground truth of single frames
(``Scenario.frame_labels``): small heads, dropped after the stage, predict

- per patch of the tower's grid, which kinds of object have their centre there (``OCCUPANCY_KINDS``; multi-label),
  so the features keep *where* things are: what the LLM later compares across frames to see motion;
- from the mean of the projector's tokens (what the LLM reads), every frame attribute: family, time of day,
  weather, lighting, sign, light colour, camera effect, and each count (0..6).

Only the tower and the projector are trained here; the LLM is untouched.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vila_ros import tasks

IGNORE = -100
MAX_COUNT = 6
# attribute -> its classes; counts are 0..MAX_COUNT (larger counts fold into the last class)
CLASS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "family": tasks.FAMILIES, "time": tasks.ROAD_TIMES, "weather": tasks.ROAD_WEATHERS,
    "lighting": tasks.WAREHOUSE_LIGHTING, "sign": tasks.SIGNS, "light": tasks.LIGHT_COLOURS,
    "effect": ("none", "camera_blocked", "camera_blurred"),
}
OCCUPANCY_POS_WEIGHT = 10.0
COUNT_ATTRIBUTES = ("cars", "pedestrians", "cyclists", "animals", "boxes", "people", "forklifts")


def encode_labels(labels: dict, patch_grid: int) -> dict[str, torch.Tensor]:
    """``Scenario.frame_labels(t, grid=patch_grid)`` -> tensors: one class index per attribute (IGNORE where the
    frame's family has no such attribute) and occupancy [patch_grid * patch_grid, kinds] in {0, 1}."""
    from vila_ros.sim.actors import OCCUPANCY_KINDS

    out: dict[str, torch.Tensor] = {}
    for name, classes in CLASS_ATTRIBUTES.items():
        out[name] = torch.tensor(classes.index(labels[name]) if name in labels else IGNORE)
    for name in COUNT_ATTRIBUTES:
        out[name] = torch.tensor(min(int(labels[name]), MAX_COUNT) if name in labels else IGNORE)
    occupancy = torch.zeros(patch_grid * patch_grid, len(OCCUPANCY_KINDS))
    for row, cells in enumerate(labels["occupancy"]):
        for col, kinds in enumerate(cells):
            for kind in kinds:
                occupancy[row * patch_grid + col, OCCUPANCY_KINDS.index(kind)] = 1.0
    out["occupancy"] = occupancy
    return out


def moment_near_event(scenario: Any, rng: np.random.Generator) -> float:
    """A moment of ``scenario``: half the time (when it has an event) within 2 s of the event's start, where the
    event actor moves and the states that tell events apart (a pedestrian on the road, a box in the air, a yellow
    light) show; else anywhere."""
    if scenario.event is not None and rng.random() < 0.5:
        t = scenario.event.start + float(rng.uniform(-0.5, 2.0))
    else:
        t = float(rng.uniform(0.0, scenario.duration))
    return min(max(t, 0.0), scenario.duration)


class SimFrameDataset:
    """Single frames of simulator scenarios at random times (``moment_near_event``), with their labels;
    deterministic in (seed, index)."""

    def __init__(self, image_processor: Any, image_size: int, patch_grid: int, split: str = "train",
                 seed: int = 0) -> None:
        self.image_processor = image_processor
        self.image_size = image_size
        self.patch_grid = patch_grid
        self.split = split
        self.seed = seed

    def frame(self, index: int) -> tuple[np.ndarray, dict]:
        from vila_ros.sim import make_scenario, split_seeds

        rng = np.random.default_rng([self.seed, int(index), 3071])
        scenario = make_scenario(split_seeds(self.split, 1, int(rng.integers(0, 9_000_000)))[0])
        t = moment_near_event(scenario, rng)
        size = self.image_size
        return scenario.render(t, size, size), scenario.frame_labels(t, size, size, self.patch_grid)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rgb, labels = self.frame(index)
        return {"pixels": self.image_processor([rgb])[0], **encode_labels(labels, self.patch_grid)}


def collate_frames(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class VisionLabelHeads(nn.Module):
    """The model's tower and projector plus the training-only heads; ``forward(batch)`` -> (loss, accuracies)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        from vila_ros.sim.actors import OCCUPANCY_KINDS

        self.model = model
        mm_hidden, hidden = model.config.mm_hidden_size, model.config.hidden_size
        self.occupancy = nn.Linear(mm_hidden, len(OCCUPANCY_KINDS))
        self.classes = nn.ModuleDict({name: nn.Linear(hidden, len(c)) for name, c in CLASS_ATTRIBUTES.items()})
        self.counts = nn.ModuleDict({name: nn.Linear(hidden, MAX_COUNT + 1) for name in COUNT_ATTRIBUTES})
        self.register_buffer("pos_weight", torch.tensor(OCCUPANCY_POS_WEIGHT), persistent=False)
        self.to(model.device)

    def training_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        unexpected = self.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"unexpected head tensors: {unexpected[:3]}")

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        model = self.model
        device = model.device
        tower_dtype = model.vision_tower.model.embeddings.patch_embedding.weight.dtype
        patches = model.vision_tower(batch["pixels"].to(device=device, dtype=tower_dtype))  # [N, P, mm_hidden]
        tokens = model.mm_projector(patches.to(model.mm_projector_dtype))  # [N, T, hidden]
        pooled = tokens.float().mean(dim=1)
        occupancy_logits = self.occupancy(patches.float())
        target = batch["occupancy"].to(device)
        # Objects fill few patches: unweighted, "nothing anywhere" is a good answer for small kinds.
        losses = [F.binary_cross_entropy_with_logits(occupancy_logits, target, pos_weight=self.pos_weight)
                  * target.shape[-1]]
        accuracy: dict[str, float] = {}
        with torch.no_grad():
            predicted = occupancy_logits > 0
            truth = target > 0.5
            hits = (predicted & truth).sum().item()
            accuracy["occupancy_f1"] = 2 * hits / max(1, predicted.sum().item() + truth.sum().item())
        for name, head in [*self.classes.items(), *self.counts.items()]:
            labels = batch[name].to(device)
            valid = labels != IGNORE
            if not bool(valid.any()):
                continue
            logits = head(pooled)
            losses.append(F.cross_entropy(logits[valid], labels[valid]))
            accuracy[name] = float((logits[valid].argmax(-1) == labels[valid]).float().mean())
        return torch.stack(losses).mean(), accuracy


def patch_grid_of(model: Any) -> int:
    config = model.vision_tower.model.config
    return config.image_size // config.patch_size
