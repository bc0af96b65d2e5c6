"""A checkpoint whose vision tower takes a larger (or smaller) input: SigLIP's position embeddings are resampled to
the new patch grid the way transformers' ``interpolate_pos_encoding`` does it at run time (bicubic, corners not
aligned), every other weight is kept, and config.json, the tower's config and its preprocessor_config.json say the
new size. More pixels give more tokens per frame (2x2 merge: (size / patch / 2)^2), so a small object covers more
of them. The result is a starting point for fine-tuning at that size, with the tower trained: its features were
learnt at the old size and do not carry over as they are.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from vila_ros.model.checkpoint import build_uninitialized, load_vila, read_config, save_vila


def resized_position_embedding(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """[old_grid^2, dim] -> [grid^2, dim], bicubic over the square patch grid; computed in fp32."""
    count, dim = weight.shape
    old = int(round(count ** 0.5))
    if old * old != count:
        raise ValueError(f"{count} position embeddings are not a square patch grid")
    square = weight.float().reshape(1, old, old, dim).permute(0, 3, 1, 2)
    square = nn.functional.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return square.permute(0, 2, 3, 1).reshape(grid * grid, dim).to(weight.dtype)


def resize_vision_input(model_dir: str | Path, out_dir: str | Path, image_size: int) -> Path:
    """Write the checkpoint at ``model_dir`` to ``out_dir`` with its tower's input at ``image_size`` pixels."""
    patch = int(read_config(model_dir).vision_tower_cfg["patch_size"])
    if image_size < 2 * patch or image_size % patch:
        raise ValueError(f"image size {image_size} must be a multiple of the patch size {patch}, at least {2 * patch}")
    model = load_vila(model_dir)
    state = model.state_dict()
    (key,) = [k for k in state if k.endswith("embeddings.position_embedding.weight")]
    state[key] = resized_position_embedding(state[key], image_size // patch)

    config = copy.deepcopy(model.config)
    config.vision_tower_cfg = dict(config.vision_tower_cfg, image_size=image_size)
    processor = copy.deepcopy(model.image_processor)
    processor.size = image_size
    resized = build_uninitialized(config, model.dtype, tokenizer=model.tokenizer, image_processor=processor)
    resized.load_state_dict(state)
    return save_vila(resized.eval(), out_dir)
