"""Randomly initialised checkpoints in the VILA1.5 layout: ``init_model(preset, out_dir)``.

- ``tiny``: a few hundred K parameters, for tests (4x4 patch grid -> 4 visual tokens, GQA in the LLM).
- ``default-small``: the embedded default model before training: 112 px, 8x8 patches -> 16 tokens/frame,
  SigLIP 192x4, Llama 256x4, ~2k byte-level BPE vocabulary, bf16, ~13 MB on disk (its last stages run at 168 px).
- ``mid``: ~170 M parameters with the 3B's vocabulary, for CPU decode benchmarks.
- ``vila1.5-3b``: the exact shapes of VILA1.5-3B (Sheared-LLaMA-2.7B + SigLIP-so400m-384), for benchmarks.
- ``tiny-nvila-lite``: NVILA-Lite's architecture in miniature (Qwen2 LLM with tied embeddings, 3x3 _fix projector,
  tiling, ChatML tokenizer), for tests.
- ``nvila-lite-2b`` / ``nvila-lite-8b``: the shapes of NVILA-Lite-2B / -8B (Qwen2-1.5B / Qwen2-7B + SigLIP-so400m
  at 448 px, mlp_downsample_3x3_fix, up to 12 tiles), random weights, for benchmarks.

Weights are created uninitialised in the saved dtype and filled tensor by tensor (fp32 noise cast in place), so a
3B checkpoint needs one bf16 copy of the model in memory, not an fp32 one plus a bf16 one.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch

from vila_ros.model.checkpoint import build_uninitialized, parse_dtype, save_vila
from vila_ros.model.config import VilaConfig, dtype_name
from vila_ros.model.preprocess import ImageProcessor
from vila_ros.model.tokenizer import BOS, EOS, PAD, build_chatml_tokenizer, build_tokenizer


@dataclasses.dataclass(frozen=True)
class Preset:
    vision: dict[str, Any]
    llm: dict[str, Any]
    tokenizer_vocab: int  # BPE vocabulary trained on the corpus
    llm_vocab: int = 0  # embedding rows if larger than the tokenizer (the 3B keeps Llama-2's 32000)
    projector: str = "mlp_downsample"
    select_layer: int = -2
    frames: int = 8
    template: str = "vicuna_v1"
    dtype: str = "bfloat16"
    init_std: float = 0.02
    resize: str = "pil"  # image resize (model/preprocess.py); the embedded default model was trained with opencv
    nvila: bool = False  # NVILA-Lite: Qwen2 LLM, ChatML tokenizer, image_encoder, tiling up to max_tiles
    max_tiles: int = 12


_SIGLIP = dict(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, num_channels=3, attention_dropout=0.0)
_LLAMA = dict(hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
_QWEN2 = dict(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False)
_SIGLIP_448 = dict(_SIGLIP, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                   image_size=448, patch_size=14, vision_use_head=True)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        vision=dict(_SIGLIP, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=56, patch_size=14, vision_use_head=False),
        llm=dict(_LLAMA, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
        tokenizer_vocab=384, frames=4, dtype="float32", init_std=0.05,
    ),
    "default-small": Preset(
        vision=dict(_SIGLIP, hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
                    image_size=112, patch_size=14, vision_use_head=False),
        llm=dict(_LLAMA, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=2048),
        tokenizer_vocab=2000, frames=8, resize="opencv",
    ),
    "mid": Preset(
        vision=dict(_SIGLIP, hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                    image_size=224, patch_size=14, vision_use_head=False),
        llm=dict(_LLAMA, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                 num_key_value_heads=16, max_position_embeddings=4096),
        tokenizer_vocab=2000, llm_vocab=32000,
    ),
    "vila1.5-3b": Preset(
        vision=dict(_SIGLIP, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                    image_size=384, patch_size=14, vision_use_head=True),
        llm=dict(_LLAMA, hidden_size=2560, intermediate_size=6912, num_hidden_layers=32, num_attention_heads=20,
                 num_key_value_heads=20, max_position_embeddings=4096),
        tokenizer_vocab=2000, llm_vocab=32000,
    ),
    "tiny-nvila-lite": Preset(
        vision=dict(_SIGLIP, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=70, patch_size=14, vision_use_head=False),  # 5x5 patches: the 3x3 merge pads to 6x6
        llm=dict(_QWEN2, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True),
        tokenizer_vocab=384, projector="mlp_downsample_3x3_fix", frames=4, template="qwen2", dtype="float32",
        init_std=0.05, nvila=True, max_tiles=4,
    ),
    "nvila-lite-2b": Preset(  # Qwen2-1.5B
        vision=_SIGLIP_448,
        llm=dict(_QWEN2, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True),
        tokenizer_vocab=2000, llm_vocab=151936, projector="mlp_downsample_3x3_fix", template="qwen2", nvila=True,
    ),
    "nvila-lite-8b": Preset(  # Qwen2-7B
        vision=_SIGLIP_448,
        llm=dict(_QWEN2, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, max_position_embeddings=32768, tie_word_embeddings=False),
        tokenizer_vocab=2000, llm_vocab=152064, projector="mlp_downsample_3x3_fix", template="qwen2", nvila=True,
    ),
}

# NVILA's config class writes these; their presence marks a config as NVILA's (VilaConfig.is_nvila).
_NVILA_IMAGE_ENCODER = '{"_target_": "llava.model.encoders.BasicImageEncoder"}'


def preset_config(name: str, vocab_size: int, bos_id: int | None, eos_id: int, pad_id: int | None) -> VilaConfig:
    preset = _get(name)
    llm_type, llm_arch = ("qwen2", "Qwen2ForCausalLM") if preset.nvila else ("llama", "LlamaForCausalLM")
    llm = dict(preset.llm, vocab_size=max(vocab_size, preset.llm_vocab), bos_token_id=bos_id, eos_token_id=eos_id,
               pad_token_id=pad_id, architectures=[llm_arch], model_type=llm_type, _name_or_path="./llm")
    vision = dict(preset.vision, architectures=["SiglipVisionModel"], model_type="siglip_vision_model",
                  _name_or_path="./vision_tower")
    projector = dict(mm_projector_type=preset.projector, model_type="v2l_projector", _name_or_path="./mm_projector")
    nvila = dict(image_aspect_ratio="dynamic", mm_projector_token_order="nvila",
                 extra=dict(image_encoder=_NVILA_IMAGE_ENCODER, min_tiles=1, max_tiles=preset.max_tiles,
                            dynamic_s2=False)) if preset.nvila else {}
    return VilaConfig(
        llm_cfg=llm, vision_tower_cfg=vision, mm_projector_cfg=projector,
        mm_vision_select_layer=preset.select_layer, num_video_frames=preset.frames, conv_template=preset.template,
        model_dtype=dtype_name(parse_dtype(preset.dtype)), **nvila,
    )


@torch.no_grad()
def init_weights_(model: torch.nn.Module, seed: int, std: float) -> None:
    """Deterministic init: normal(0, std) matrices, zero biases, unit norm weights; fp32 noise, one tensor at a time."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias" or leaf.endswith("_bias"):
            param.zero_()
        elif param.dim() == 1:
            param.fill_(1.0)  # LayerNorm / RMSNorm scales
        else:
            param.copy_(torch.randn(param.shape, generator=gen) * std)


def init_model(
    preset: str,
    out_dir: str | Path,
    seed: int = 0,
    tokenizer_corpus: Sequence[str] | None = None,
) -> Path:
    """Write a randomly initialised checkpoint of ``preset`` to ``out_dir``; returns the directory."""
    spec = _get(preset)
    build = build_chatml_tokenizer if spec.nvila else build_tokenizer
    tokenizer = build(tokenizer_corpus, spec.tokenizer_vocab, model_max_length=spec.llm["max_position_embeddings"])
    bos = None if spec.nvila else tokenizer.convert_tokens_to_ids(BOS)
    eos, pad = (tokenizer.eos_token_id, tokenizer.pad_token_id) if spec.nvila else \
        (tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD))
    config = preset_config(preset, len(tokenizer), bos, eos, pad)
    processor = ImageProcessor(size=config.image_size, aspect_ratio=config.image_aspect_ratio, resize=spec.resize)
    model = build_uninitialized(config, parse_dtype(spec.dtype), tokenizer=tokenizer, image_processor=processor)
    init_weights_(model, seed, spec.init_std)
    return save_vila(model, out_dir)


def _get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
