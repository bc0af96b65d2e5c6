"""Batches of training samples: right-padded collation and the step-indexed sampler that makes a resumed run see
exactly the data it would have seen."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

from vila_ros.model.prompt import IGNORE_INDEX


def collate(samples: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, Any]:
    """Right-padded batch: input_ids [B, L] (pad_id), labels [B, L] (-100), attention_mask [B, L], images
    [N, 3, S, S] (every sample's pixels in slot order, row by row; None without images), num_tokens."""
    length = max(int(s["input_ids"].numel()) for s in samples)
    bsz = len(samples)
    input_ids = torch.full((bsz, length), pad_id, dtype=torch.long)
    labels = torch.full((bsz, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((bsz, length), dtype=torch.long)
    pixels = []
    for i, s in enumerate(samples):
        n = int(s["input_ids"].numel())
        input_ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
        mask[i, :n] = 1
        if s["pixels"].shape[0]:
            pixels.append(s["pixels"])
    images = torch.cat(pixels) if pixels else None
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "images": images}


class StepSampler:
    """Global sample indices by optimizer step, so a resumed run sees exactly the data it would have seen.

    Sample ``k`` of the run (k = ((step * accum) + micro) * world * batch + rank * batch + j) maps to a dataset index
    through a seeded permutation per epoch (finite datasets) or directly (the infinite simulator): each rank reads its
    own share, like DistributedSampler, without any state to save.
    """

    def __init__(self, size: int | None, batch_size: int, grad_accum: int, rank: int, world: int, seed: int):
        self.size, self.batch_size, self.grad_accum = size, batch_size, grad_accum
        self.rank, self.world, self.seed = rank, world, seed
        self._perm: tuple[int, torch.Tensor] | None = None

    def index(self, k: int) -> int:
        if self.size is None:
            return k
        epoch, pos = divmod(k, self.size)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.size, generator=gen))
        return int(self._perm[1][pos])

    def micro_batch(self, step: int, micro: int) -> list[int]:
        base = ((step * self.grad_accum + micro) * self.world + self.rank) * self.batch_size
        return [self.index(base + j) for j in range(self.batch_size)]


def epoch_steps(size: int, batch_size: int, grad_accum: int, world: int) -> int:
    return max(1, math.ceil(size / (batch_size * grad_accum * world)))


def fixed_samples(dataset: Any, indices: Iterable[int]) -> list[dict[str, torch.Tensor]]:
    return [dataset[i] for i in indices]
