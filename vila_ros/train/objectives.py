"""What a training stage minimises, behind one small interface the trainer runs: ``collate``, ``loss``, ``weight``
(of a batch in a validation mean), and ``state`` / ``load_state`` (training-only modules, saved for resume)."""
from __future__ import annotations

from typing import Any

import torch

from vila_ros.model.prompt import IMAGE_TOKEN_INDEX
from vila_ros.train import batching as B


def batch_tokens(batch: dict[str, Any], tokens_per_image: int) -> int:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    slots = int((ids == IMAGE_TOKEN_INDEX).sum())
    return int(mask.sum()) + slots * (tokens_per_image - 1)


class LanguageObjective:
    """VILA's next-token loss on conversations (every stage but ``vision``)."""

    def __init__(self, model: Any) -> None:
        self.module = model
        self.pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        self.tokens_per_image = model.tokens_per_image

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        return B.collate(samples, self.pad_id)

    def loss(self, net: Any, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, int, dict]:
        """(mean loss, tokens in the batch, extra metrics); ``net`` is the module or its DDP wrapper."""
        out = net(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                  images=None if batch["images"] is None else batch["images"].to(device),
                  labels=batch["labels"].to(device))
        return out.loss, batch_tokens(batch, self.tokens_per_image), {}

    def weight(self, batch: dict[str, Any]) -> int:
        """How much this batch counts in a validation mean: its supervised tokens."""
        return int((batch["labels"][:, 1:] != -100).sum())

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        pass


class FrameObjective:
    """A stage on single frames (``FRAME_DATA``) for the tower and projector, the LLM untouched: ``module(batch)``
    gives (loss, metrics), and its training-only tensors (heads, a frozen teacher) go with the trainer state for
    resume: the ``vision`` stage's label heads (``vision_labels``), the camera alignment's teacher
    (``camera_alignment``)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        from vila_ros.train.vision_labels import collate_frames

        return collate_frames(samples)

    def loss(self, net: Any, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, int, dict]:
        loss, metrics = net(batch)
        return loss, int(batch["pixels"].shape[0]), metrics

    def weight(self, batch: dict[str, Any]) -> int:
        return int(batch["pixels"].shape[0])

    def state(self) -> dict[str, torch.Tensor]:
        return self.module.training_state()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_training_state(state)


FRAME_DATA = ("sim_frames", "sim_frame_pairs")


def frame_datasets(kind: str, data: dict[str, Any], model: Any, seed: int) -> tuple[Any, Any]:
    """(train, val) datasets of a stage on single frames (``FRAME_DATA``); val is a fixed seed of the val split."""
    if kind == "sim_frames":
        from vila_ros.train.vision_labels import SimFrameDataset, patch_grid_of

        frames = dict(image_processor=model.image_processor, image_size=model.config.image_size,
                      patch_grid=patch_grid_of(model))
        return SimFrameDataset(split="train", seed=seed, **frames), SimFrameDataset(split="val", seed=12345, **frames)
    from vila_ros.train.camera_alignment import FramePairDataset

    pairs = dict(image_processor=model.image_processor, image_size=model.config.image_size,
                 render_size=data.get("render_size"), unfamiliar=float(data.get("unfamiliar", 0.1)))
    return FramePairDataset(split="train", seed=seed, **pairs), FramePairDataset(split="val", seed=12345, **pairs)


def objective_for(stage: dict[str, Any], model: Any) -> LanguageObjective | FrameObjective:
    kind = stage["data"].get("type")
    if kind == "sim_frames":
        from vila_ros.train.vision_labels import VisionLabelHeads

        return FrameObjective(VisionLabelHeads(model))
    if kind == "sim_frame_pairs":
        from vila_ros.train.camera_alignment import AlignedTower

        return FrameObjective(AlignedTower(model))
    return LanguageObjective(model)
