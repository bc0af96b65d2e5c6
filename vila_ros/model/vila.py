"""VilaModel: SigLIP tower -> projector -> LLM (Llama for VILA1.5, Qwen2 for NVILA-Lite) as one nn.Module.

NVILA's image encoder follows every image's projected features with the embeddings of ``image_end_text`` ("\\n");
``encode_images`` appends them, so an image's block stays one fixed-size [tokens_per_image, hidden] tensor and
everything that splices blocks into a prompt (the engine, training) works unchanged for both families.

``forward`` is the training entry point: a padded batch of token sequences holding -200 image slots is turned
into ``inputs_embeds`` by one vectorised splice (no per-sample Python loop over tokens), so the trainer pays
for the LLM, not for bookkeeping.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from vila_ros.model.config import VilaConfig
from vila_ros.model.preprocess import ImageProcessor
from vila_ros.model.projector import MultimodalProjector
from vila_ros.model.prompt import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vila_ros.model.vision import VisionTower

_HF_CONFIG_NOISE = ("_name_or_path", "architectures", "transformers_version", "model_type")


LLM_CLASSES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def llm_config_from(cfg: dict[str, Any]) -> LlamaConfig | Qwen2Config:
    config_class, _ = LLM_CLASSES[str(cfg.get("model_type") or "llama")]
    return config_class(**{k: v for k, v in cfg.items() if k not in _HF_CONFIG_NOISE})


def build_llm(cfg: dict[str, Any]) -> LlamaForCausalLM | Qwen2ForCausalLM:
    """The HF causal LM the config names (``model_type``: llama, qwen2); transformers' own modules, so the
    engine's decoder reuses their weights and rotary tables."""
    _, model_class = LLM_CLASSES[str(cfg.get("model_type") or "llama")]
    return model_class(llm_config_from(cfg))


def vision_config_from(cfg: dict[str, Any]) -> SiglipVisionConfig:
    return SiglipVisionConfig(**{k: v for k, v in cfg.items() if k not in _HF_CONFIG_NOISE})


def project_frames(tower: nn.Module, projector: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Tensor[N, 3, S, S] -> the projector's tokens Tensor[N, T, hidden] (no image-end tokens), each module run on
    its own device and dtype: a model's tower and projector, or frozen copies of them (a training teacher)."""
    weight = tower.model.embeddings.patch_embedding.weight
    patches = tower(pixels.to(device=weight.device, dtype=weight.dtype))
    return projector(patches.to(next(projector.parameters()).dtype))


class VilaModel(nn.Module):
    def __init__(self, config: VilaConfig, tokenizer: Any = None, image_processor: ImageProcessor | None = None):
        """Builds the modules from ``config`` (random weights unless the caller loads some; see checkpoint.py)."""
        super().__init__()
        self.config = config
        self.vision_tower = VisionTower(
            vision_config_from(config.vision_tower_cfg), config.mm_vision_select_layer, config.mm_vision_select_feature
        )
        self.mm_projector = MultimodalProjector(
            config.mm_projector_type, config.mm_hidden_size, config.hidden_size, config.mm_projector_token_order
        )
        self.llm = build_llm(config.llm_cfg)
        self.tokenizer = tokenizer
        self.image_processor = image_processor or ImageProcessor(
            size=config.image_size, aspect_ratio=config.image_aspect_ratio
        )

    # -- properties other layers read ---------------------------------------------------------------------------
    @property
    def conv_template(self) -> str:
        return self.config.conv_template

    @property
    def image_end_ids(self) -> list[int]:
        """Token ids whose embeddings follow each image's features (NVILA: the tokenizer's ids of "\\n")."""
        text = self.config.image_end_text
        if not text:
            return []
        if self.tokenizer is None:
            raise ValueError("an NVILA model needs its tokenizer to frame image features (image_encoder end_tokens)")
        cached = getattr(self, "_image_end_cache", None)  # (tokenizer, text, ids): not re-tokenized per call
        if cached is None or cached[0] is not self.tokenizer or cached[1] != text:
            cached = self._image_end_cache = (self.tokenizer, text, list(self.tokenizer(text).input_ids))
        return list(cached[2])

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image + len(self.image_end_ids)

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.llm.model.embed_tokens.weight.device

    # -- vision ------------------------------------------------------------------------------------------------------
    def preprocess(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """HxWx3 uint8 RGB frames -> float32 Tensor[N, 3, S, S] following preprocessor_config.json."""
        return self.image_processor(frames)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tensor[N, 3, S, S] -> Tensor[N, T, hidden]; each image is encoded independently of the others."""
        projected = project_frames(self.vision_tower, self.mm_projector, pixels)
        end_ids = self.image_end_ids
        if not end_ids:
            return projected
        end = self.llm.get_input_embeddings()(torch.tensor(end_ids, device=self.device)).to(projected.dtype)
        return torch.cat([projected, end[None].expand(projected.shape[0], -1, -1)], dim=1)

    def tiles(self, frame: np.ndarray) -> list[np.ndarray]:
        """One frame as the tower's images: its tiles and thumbnail under ``image_aspect_ratio: dynamic``
        (model/tiling.py), else the frame itself."""
        if not self.config.tiling:
            return [frame]
        from vila_ros.model.tiling import tile_image

        return tile_image(frame, self.image_processor.size, self.config.min_tiles, self.config.max_tiles)

    @property
    def mm_projector_dtype(self) -> torch.dtype:
        return next(self.mm_projector.parameters()).dtype

    # -- LLM inputs -----------------------------------------------------------------------------------------------
    def _image_features(self, images: Any) -> torch.Tensor | None:
        if images is None:
            return None
        if isinstance(images, torch.Tensor):
            if images.dim() == 4:  # pixels
                return self.encode_images(images)
            if images.dim() == 3:  # already [N, T, hidden]
                return images
            raise ValueError(
                f"images tensor must be [N,3,S,S] pixels or [N,T,hidden] features, got {tuple(images.shape)}"
            )
        items = list(images)
        if not items:
            return None
        if all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in items):
            return torch.stack(items)
        raise ValueError("images must be a pixel tensor, a feature tensor or a list of [T, hidden] tensors")

    def build_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        images: Any = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Splice image features into the embedded batch.

        input_ids [B, L] with IMAGE_TOKEN_INDEX slots (images consumed in order, row by row) -> inputs_embeds
        [B, L', H] where every slot widens to T positions; attention_mask and labels widen alike (labels -100 on
        visual positions), rows are padded on the right, position_ids count only attended positions so left- and
        right-padded batches both work.
        """
        device = self.device
        input_ids = input_ids.to(device)
        bsz, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(device).bool()
        is_image = input_ids == IMAGE_TOKEN_INDEX
        features = self._image_features(images)
        num_slots = int(is_image.sum())
        num_images = 0 if features is None else features.shape[0]
        if num_slots != num_images:
            raise ValueError(f"input_ids hold {num_slots} image slots but {num_images} images were given")
        tokens = 1 if features is None else features.shape[1]

        embed = self.llm.get_input_embeddings()
        text_embeds = embed(input_ids.clamp_min(0))  # image slots embed a dummy id, overwritten below
        # Each input position widens to T (image) or 1 (text) output positions; padding (mask 0) to none, so the
        # output is compact and right-padded whatever the input padding was, and no compute goes to pads.
        widths = torch.where(attention_mask, torch.where(is_image, tokens, 1), 0)
        starts = torch.cumsum(widths, dim=1) - widths
        new_lengths = widths.sum(dim=1)
        out_len = int(new_lengths.max())
        hidden = text_embeds.shape[-1]

        rows = torch.arange(bsz, device=device)[:, None].expand(bsz, length)
        text_pos = ~is_image & attention_mask
        embeds = text_embeds.new_zeros(bsz, out_len, hidden)
        embeds[rows[text_pos], starts[text_pos]] = text_embeds[text_pos]
        if num_images:
            placed = attention_mask[is_image]  # images are consumed in order even if a slot is masked out
            offsets = torch.arange(tokens, device=device)
            img_rows = rows[is_image][placed][:, None].expand(-1, tokens)
            img_cols = starts[is_image][placed][:, None] + offsets
            embeds[img_rows, img_cols] = features[placed].to(embeds.dtype)
        positions = torch.arange(out_len, device=device)[None].expand(bsz, out_len)
        mask = positions < new_lengths[:, None]
        out = {"inputs_embeds": embeds, "attention_mask": mask.long(), "position_ids": positions}
        if labels is not None:
            labels = labels.to(device)
            new_labels = torch.full((bsz, out_len), IGNORE_INDEX, dtype=labels.dtype, device=device)
            new_labels[rows[text_pos], starts[text_pos]] = labels[text_pos]
            out["labels"] = new_labels
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        images: Any = None,
        labels: torch.Tensor | None = None,
        **llm_kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Training forward: loss (if labels) and logits over the spliced sequence."""
        inputs = self.build_inputs(input_ids, attention_mask, images, labels)
        return self.llm(**inputs, **llm_kwargs)
