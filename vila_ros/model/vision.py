"""SigLIP vision tower with VILA's feature selection (``mm_vision_select_layer`` / ``mm_vision_select_feature``).

VILA runs the whole tower and keeps ``hidden_states[select_layer]``; layers after the selected one (the last
encoder layer for -2, plus post_layernorm and the pooling head) never influence the result, so we stop early:
1/27 of the tower's time on SigLIP-so400m and a quarter on a 4-layer tiny tower. The weights stay in the module,
so checkpoints keep every tensor VILA expects.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

# transformers 5 dropped the "vision_model." level from SiglipVisionModel's state dict; VILA's files (saved with
# transformers 4.x) keep it. We write VILA's names and accept both on load.
VILA_STATE_PREFIX = "vision_model."


class VisionTower(nn.Module):
    def __init__(self, config: SiglipVisionConfig, select_layer: int = -2, select_feature: str = "cls_patch"):
        super().__init__()
        if select_feature not in ("cls_patch", "patch"):
            raise ValueError(f"unsupported mm_vision_select_feature {select_feature!r}")
        self.model = SiglipVisionModel(config)
        self.select_layer = select_layer
        self.select_feature = select_feature
        num_layers = config.num_hidden_layers
        # hidden_states has num_layers + 1 entries (embeddings first); index it like VILA does.
        index = select_layer if select_layer >= 0 else num_layers + 1 + select_layer
        if not 0 <= index <= num_layers:
            raise ValueError(f"mm_vision_select_layer {select_layer} out of range for {num_layers} layers")
        self.num_layers_used = index

    @property
    def config(self) -> SiglipVisionConfig:
        return self.model.config

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tensor[N, 3, S, S] -> Tensor[N, tokens, mm_hidden] (the selected hidden state)."""
        x = self.model.embeddings(pixels)
        for layer in self.model.encoder.layers[: self.num_layers_used]:
            x = layer(x, None)
        if self.select_feature == "patch":
            x = x[:, 1:]  # VILA drops token 0 (a CLS token in towers that have one)
        return x
