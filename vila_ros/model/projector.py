"""Vision-to-language projectors of VILA1.5 and NVILA (``mm_projector_type``), state-dict compatible with VILA's files.

``mlp_downsample`` (every VILA1.5 size) merges each 2x2 block of patch features into one token (4x fewer tokens)
before a LayerNorm + 2-layer GELU MLP. Its parameters live at ``layers.1`` (LayerNorm), ``layers.2`` and
``layers.4`` (Linear): index 0 is the parameter-free merge and 3 the GELU, so the Sequential keeps those slots.
NVILA's ``mlp_downsample_2x2_fix`` is the same stack with row-major token order; ``mlp_downsample_3x3_fix``
(NVILA-Lite) merges 3x3 blocks: merge, LayerNorm(9C), Linear(9C, 3C), GELU, LayerNorm(3C), Linear(3C, hidden),
GELU, Linear(hidden, hidden), parameters at ``layers.1, 2, 4, 5, 7``.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from vila_ros.model.config import TOKEN_ORDERS


class DownSampleKxK(nn.Module):
    """[B, N, C] patch grid (N = h*h) -> [B, ceil(h/k)^2, k*k*C], one token per k x k block.

    Zero rows at the bottom and zero columns on the right pad the grid to a multiple of k first (SigLIP-384:
    27x27 -> 28x28 -> 196 tokens for k = 2; SigLIP-448: 32x32 -> 33x33 -> 121 tokens for k = 3, NVILA's "_fix"
    merge). A merged token's channels run over the block's rows, then its columns: [p(r,c), p(r,c+1), ...,
    p(r+1,c), ...].
    Token order: VILA1.5 weights were trained with the blocks emitted column-major (block origins (0,0),(2,0),
    (0,2),(2,2) on a 4x4 grid); NVILA and TensorRT-LLM's PyTorch port emit them row-major. Using the wrong order
    on VILA1.5 weights scrambles the image for the LLM without any error, hence the explicit switch.
    """

    def __init__(self, factor: int, token_order: str = "nvila") -> None:
        super().__init__()
        if token_order not in TOKEN_ORDERS:
            raise ValueError(f"token_order must be one of {TOKEN_ORDERS}, got {token_order!r}")
        self.factor = factor
        self.token_order = token_order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = math.isqrt(n)
        k = self.factor
        if h * h != n:
            raise ValueError(f"DownSample{k}x{k} needs a square patch grid, got {n} tokens")
        grid = x.reshape(b, h, h, c)
        pad = -h % k
        if pad:
            grid = nn.functional.pad(grid, (0, 0, 0, pad, 0, pad))  # zero columns right, zero rows bottom
            h += pad
        blocks = grid.reshape(b, h // k, k, h // k, k, c)  # [b, block_row, dr, block_col, dc, c]
        if self.token_order == "vila1.5":
            blocks = blocks.permute(0, 3, 1, 2, 4, 5)  # column-major over blocks
        else:
            blocks = blocks.permute(0, 1, 3, 2, 4, 5)  # row-major over blocks
        return blocks.reshape(b, (h // k) ** 2, k * k * c)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, token_order={self.token_order!r}"


class DownSample2x2(DownSampleKxK):
    """``mlp_downsample``'s merge (every VILA1.5 size): 2x2 blocks in the checkpoint's token order."""

    def __init__(self, token_order: str = "vila1.5") -> None:
        super().__init__(2, token_order)


class MultimodalProjector(nn.Module):
    """``layers`` holds the projector exactly as VILA names it, so ``state_dict()`` keys match mm_projector files."""

    def __init__(self, projector_type: str, mm_hidden_size: int, hidden_size: int, token_order: str = "vila1.5"):
        super().__init__()
        self.projector_type = projector_type
        if projector_type == "linear":
            self.layers: nn.Module = nn.Linear(mm_hidden_size, hidden_size)
        elif projector_type == "mlp_downsample":
            self.layers = _merge_then_mlp(DownSample2x2(token_order), 4 * mm_hidden_size, hidden_size)
        elif projector_type == "mlp_downsample_2x2_fix":
            self.layers = _merge_then_mlp(DownSampleKxK(2), 4 * mm_hidden_size, hidden_size)
        elif projector_type == "mlp_downsample_3x3_fix":
            self.layers = nn.Sequential(
                DownSampleKxK(3),
                nn.LayerNorm(9 * mm_hidden_size),
                nn.Linear(9 * mm_hidden_size, 3 * mm_hidden_size),
                nn.GELU(),
                nn.LayerNorm(3 * mm_hidden_size),
                nn.Linear(3 * mm_hidden_size, hidden_size),
                nn.GELU(),
                nn.Linear(hidden_size, hidden_size),
            )
        elif (match := re.fullmatch(r"mlp(\d+)x_gelu", projector_type)) is not None:
            depth = int(match.group(1))
            if depth < 1:
                raise ValueError(f"bad projector type {projector_type!r}")
            modules: list[nn.Module] = [nn.Linear(mm_hidden_size, hidden_size)]
            for _ in range(depth - 1):
                modules += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
            self.layers = nn.Sequential(*modules)
        else:
            raise ValueError(f"unknown mm_projector_type {projector_type!r} (linear, mlp{{N}}x_gelu, mlp_downsample, "
                             "mlp_downsample_2x2_fix, mlp_downsample_3x3_fix)")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def _merge_then_mlp(merge: nn.Module, merged_size: int, hidden_size: int) -> nn.Sequential:
    """A token merge, then LayerNorm + Linear + GELU + Linear (the checkpoint keys number these modules)."""
    return nn.Sequential(merge, nn.LayerNorm(merged_size), nn.Linear(merged_size, hidden_size), nn.GELU(),
                         nn.Linear(hidden_size, hidden_size))
