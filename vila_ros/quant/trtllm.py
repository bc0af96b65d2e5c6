"""``vila-ros export-trtllm``: an int4 checkpoint -> TensorRT-LLM W4A16_AWQ checkpoint + ONNX vision encoder.

Output directory::

    llm_ckpt/config.json          TensorRT-LLM PretrainedConfig: LlamaForCausalLM, dtype float16,
                                  quantization {quant_algo W4A16_AWQ, group_size, has_zero_point, pre_quant_scale}
    llm_ckpt/rank0.safetensors    TensorRT-LLM weight names (layout below)
    vision/vision.onnx            SigLIP tower + projector: pixels [N, 3, S, S] fp32 -> features [N, T, hidden]
                                  (opset 17, dynamic N), checked against torch with onnxruntime
    build_engines.sh              trtllm-build + trtexec commands (max_multimodal_len = batch x frames x T)
    export.json                   what was exported, the ONNX check, the numbers in the commands

rank0.safetensors (names and layout as written by nvidia-modelopt 0.47's ``export_tensorrt_llm_checkpoint`` for
``int4_awq``, which trtllm-build reads; see engines/README.md for the sources):

    transformer.vocab_embedding.weight            fp16 [V', H]   (V' = vocab padded to a multiple of 64)
    transformer.layers.{i}.input_layernorm.weight fp16 [H]
    transformer.layers.{i}.attention.qkv.*        q, k, v rows concatenated
    transformer.layers.{i}.attention.dense.*      o_proj
    transformer.layers.{i}.post_layernorm.weight  fp16 [H]
    transformer.layers.{i}.mlp.fc.*               gate_proj (the activated branch)
    transformer.layers.{i}.mlp.gate.*             up_proj
    transformer.layers.{i}.mlp.proj.*             down_proj
    transformer.ln_f.weight, lm_head.weight       fp16 (lm_head padded to V' rows)

  per quantized linear (out x in, group G):
    .weight                   int8 [out/2, in]: signed int4 s = q - 8 in [-8, 7], two output rows per byte:
                              byte[r, c] = (s[2r, c] & 0xF) | (s[2r+1, c] & 0xF) << 4
    .weights_scaling_factor   fp32 [out, in/G]      (trtllm-build transposes it and casts to the model dtype)
    .prequant_scaling_factor  fp16 [in]             all ones: our AWQ scales are folded into norms / linears
    .zero                     fp16 [in/G, out]      only with has_zero_point (asym): (8 - zero) * scale

  dequantized: W[o, c] = s[o, c] * weights_scaling_factor[o, c // G] (+ zero[c // G, o] when present)

TensorRT-LLM needs whole groups. An intermediate size that G does not divide (the default model's 688) is padded to
the next multiple with channels of zero weight (extra gate/up rows, extra down columns whose int4 value is the row's
zero point): the function is unchanged and config.json carries the padded intermediate_size. hidden_size and the
attention width must be multiples of G.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from vila_ros.model.int4 import unpack_nibbles

TRT_GROUP_SIZES = (64, 128)
VOCAB_PAD = 64
# (our module, TensorRT-LLM module); qkv fuses three of ours
LINEAR_MAP = (("self_attn.o_proj", "attention.dense"), ("mlp.gate_proj", "mlp.fc"), ("mlp.up_proj", "mlp.gate"),
              ("mlp.down_proj", "mlp.proj"))


class ExportError(ValueError):
    pass


def _tensors(part_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from vila_ros.model.checkpoint import weight_files

    out: dict[str, torch.Tensor] = {}
    for f in weight_files(part_dir):
        out.update(load_file(str(f)))
    return out


def pack_rows_int4(signed: torch.Tensor) -> torch.Tensor:
    """int [out, in] in [-8, 7] -> int8 [out/2, in], rows 2r (low nibble) and 2r+1 (high nibble) per byte."""
    if signed.shape[0] % 2:
        raise ExportError(f"out_features {signed.shape[0]} must be even to pack two rows per byte")
    s = signed.to(torch.int16) & 0xF
    return (s[0::2] | (s[1::2] << 4)).to(torch.uint8).view(torch.int8)


def _fp16(t: torch.Tensor, name: str) -> torch.Tensor:
    out = t.to(torch.float16)
    if not torch.isfinite(out).all():
        raise ExportError(f"{name} overflows float16 (max |x| {float(t.abs().max()):.3g})")
    return out.contiguous()


def _linear(tensors: dict[str, torch.Tensor], names: list[str], in_features: int, group: int, zero_point: bool,
            pad_in: bool = False, pad_out: int = 0) -> dict[str, torch.Tensor]:
    """One TensorRT-LLM linear from our int4 tensors of ``names`` (rows concatenated).

    pad_in: ``in_features`` is not a multiple of the group (the down projection of an intermediate size like 688):
    the short last group is completed with weights that dequantize to exactly 0 (q = that row's zero point).
    pad_out: extra output rows of zero weights (the gate/up projections padded to the same intermediate size).
    Both keep the function: silu(0) * 0 = 0 for the padded channels, and zero columns ignore them.
    """
    qs, scales, zeros = [], [], []
    for name in names:
        sc = tensors[f"{name}.scales"].float()
        zr = tensors[f"{name}.zeros"]
        k_full = sc.shape[1] * group
        q = unpack_nibbles(tensors[f"{name}.qweight"], in_features)
        if k_full != in_features:
            if not pad_in:
                raise ExportError(f"{name}: in_features {in_features} is not a multiple of group {group} "
                                  "(TensorRT-LLM needs whole groups)")
            q = torch.cat([q, zr[:, -1:].expand(-1, k_full - in_features)], dim=1)
        qs.append(q.to(torch.int16) - 8)
        scales.append(sc)
        zeros.append(zr.float())
    q, s, z = torch.cat(qs), torch.cat(scales), torch.cat(zeros)
    if pad_out:
        q = torch.cat([q, torch.zeros(pad_out, q.shape[1], dtype=q.dtype)])
        s = torch.cat([s, torch.ones(pad_out, s.shape[1])])
        z = torch.cat([z, torch.full((pad_out, z.shape[1]), 8.0)])
    if not zero_point and not bool((z == 8).all()):
        raise ExportError(f"{names[0]}: asymmetric zero points but has_zero_point is false")
    out = {
        "weight": pack_rows_int4(q),
        "weights_scaling_factor": s.contiguous(),
        "prequant_scaling_factor": torch.ones(q.shape[1], dtype=torch.float16),
    }
    if zero_point:
        out["zero"] = _fp16(((8.0 - z) * s).t(), names[0] + ".zero")
    return out


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, 0, 0, rows - t.shape[0])) if rows > t.shape[0] else t


def export_llm(model_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write llm_ckpt/config.json + rank0.safetensors from an int4 checkpoint (format vila_ros_int4/v1)."""
    from safetensors.torch import save_file

    from vila_ros.model.checkpoint import read_config
    from vila_ros.model.int4_checkpoint import FORMAT

    root = Path(model_dir)
    config = read_config(root)
    qc = config.llm_cfg.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("format") != FORMAT:
        raise ExportError(f"{root} is not an int4 checkpoint ({FORMAT}): run vila-ros quantize first")
    group = int(qc["group_size"])
    if group not in TRT_GROUP_SIZES:
        raise ExportError(f"group size {group}: TensorRT-LLM's W4A16_AWQ kernels take {TRT_GROUP_SIZES}; "
                          "re-quantize with --group 128 (or 64)")
    zero_point = qc.get("scheme", "asym") == "asym"
    cfg = config.llm_cfg
    hidden, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    vocab = int(cfg["vocab_size"])
    inter = int(cfg["intermediate_size"])
    inter_pad = math.ceil(inter / group) * group  # zero channels added: see _linear
    for what, size in (("hidden_size", hidden), ("attention width", heads * head_dim)):
        if size % group:
            raise ExportError(f"{what} {size} is not a multiple of group {group}: TensorRT-LLM needs whole groups "
                              "(re-quantize with --group 64)")
    vocab_pad = math.ceil(vocab / VOCAB_PAD) * VOCAB_PAD
    rope = cfg.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    if rope.get("rope_type", "default") not in ("default", None):
        raise ExportError(f"rope type {rope.get('rope_type')!r} is not mapped to TensorRT-LLM by this exporter")
    llm_dir = root / config.part_dir_name("llm")
    t = _tensors(llm_dir)
    w: dict[str, torch.Tensor] = {}
    w["transformer.vocab_embedding.weight"] = _pad_rows(_fp16(t["model.embed_tokens.weight"], "embed_tokens"),
                                                        vocab_pad)
    lm_head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    w["lm_head.weight"] = _pad_rows(_fp16(lm_head, "lm_head"), vocab_pad)
    w["transformer.ln_f.weight"] = _fp16(t["model.norm.weight"], "model.norm")
    for i in range(layers):
        src, dst = f"model.layers.{i}", f"transformer.layers.{i}"
        w[f"{dst}.input_layernorm.weight"] = _fp16(t[f"{src}.input_layernorm.weight"], f"{src}.input_layernorm")
        w[f"{dst}.post_layernorm.weight"] = _fp16(t[f"{src}.post_attention_layernorm.weight"], f"{src}.post_norm")
        qkv = _linear(t, [f"{src}.self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj")], hidden, group,
                      zero_point)
        w.update({f"{dst}.attention.qkv.{k}": v for k, v in qkv.items()})
        for ours, theirs in LINEAR_MAP:
            k_in = {"self_attn.o_proj": heads * head_dim, "mlp.down_proj": inter}.get(ours, hidden)
            pad_out = inter_pad - inter if ours in ("mlp.gate_proj", "mlp.up_proj") else 0
            lin = _linear(t, [f"{src}.{ours}"], k_in, group, zero_point, pad_in=ours == "mlp.down_proj",
                          pad_out=pad_out)
            w.update({f"{dst}.{theirs}.{k}": v for k, v in lin.items()})
    trt_config = {
        "producer": {"name": "vila_ros", "format": FORMAT},
        "architecture": "LlamaForCausalLM",
        "dtype": "float16",
        "logits_dtype": "float32",
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_size": hidden,
        "head_size": head_dim,
        "intermediate_size": inter_pad,
        "vocab_size": vocab_pad,
        "max_position_embeddings": int(cfg["max_position_embeddings"]),
        "hidden_act": cfg.get("hidden_act", "silu"),
        "norm_epsilon": float(cfg.get("rms_norm_eps", 1e-6)),
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": rope_theta,
        "rotary_scaling": None,
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "share_embedding_table": False,
        "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        "quantization": {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": None, "group_size": group,
                         "has_zero_point": zero_point, "pre_quant_scale": True, "exclude_modules": ["lm_head"]},
        "bos_token_id": cfg.get("bos_token_id"),
        "eos_token_id": cfg.get("eos_token_id"),
    }
    ckpt = Path(out_dir) / "llm_ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    with open(ckpt / "config.json", "w", encoding="utf-8") as f:
        json.dump(trt_config, f, indent=2)
        f.write("\n")
    save_file(w, str(ckpt / "rank0.safetensors"), metadata={"format": "pt"})
    return {"dir": str(ckpt), "group_size": group, "has_zero_point": zero_point, "vocab_size": vocab,
            "vocab_size_padded": vocab_pad, "intermediate_size": inter, "intermediate_size_padded": inter_pad,
            "tensors": len(w),
            "bytes": (ckpt / "rank0.safetensors").stat().st_size}


class VisionEncoder(torch.nn.Module):
    """pixels [N, 3, S, S] -> projected features [N, T, hidden]: what the visual engine computes."""

    def __init__(self, model: Any):
        super().__init__()
        self.tower = model.vision_tower
        self.projector = model.mm_projector

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projector(self.tower(pixels))


def write_vision_onnx(model: Any, path: Path, opset: int = 17) -> None:
    """The model's tower + projector (fp32) as ONNX with a dynamic batch, from a loaded VilaModel."""
    enc = VisionEncoder(model).float().eval()
    size = model.config.image_size
    with torch.inference_mode(), warnings.catch_warnings():
        # The legacy (TorchScript) exporter: the dynamo one needs onnxscript. Its trace warnings are about shape
        # checks that are constant for a fixed image size.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(enc, (torch.zeros(1, 3, size, size),), str(path), input_names=["pixels"],
                          output_names=["features"], dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def export_vision_onnx(model_dir: str | Path, out_dir: str | Path, opset: int = 17, check_batch: int = 2,
                       seed: int = 0) -> dict[str, Any]:
    """SigLIP tower + projector (fp32) to ONNX with a dynamic batch; onnxruntime vs torch max abs error."""
    import numpy as np

    from vila_ros.model.int4_checkpoint import load_quantized_vila

    model = load_quantized_vila(model_dir, prepare=False)
    enc = VisionEncoder(model).float().eval()
    size = model.config.image_size
    vdir = Path(out_dir) / "vision"
    vdir.mkdir(parents=True, exist_ok=True)
    path = vdir / "vision.onnx"
    write_vision_onnx(model, path, opset)
    report: dict[str, Any] = {"path": str(path), "opset": opset, "image_size": size,
                              "tokens_per_image": model.config.tokens_per_image, "hidden": model.config.hidden_size}
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    pixels = torch.from_numpy(rng.uniform(-1, 1, (check_batch, 3, size, size)).astype(np.float32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"pixels": pixels.numpy()})[0]
    with torch.inference_mode():
        ref = enc(pixels).numpy()
    report.update(check_batch=check_batch, max_abs_error=float(np.abs(got - ref).max()),
                  max_abs_ref=float(np.abs(ref).max()), output_shape=list(got.shape))
    return report


def build_script(out_dir: Path, llm: dict[str, Any], vision: dict[str, Any], max_batch: int, frames: int,
                 max_input_text: int, max_new_tokens: int) -> dict[str, Any]:
    tokens = vision["tokens_per_image"]
    mm_len = max_batch * frames * tokens
    max_input = max_input_text + frames * tokens
    numbers = {"max_batch_size": max_batch, "frames": frames, "tokens_per_image": tokens,
               "max_multimodal_len": mm_len, "max_input_len": max_input, "max_seq_len": max_input + max_new_tokens}
    s = vision["image_size"]
    script = f"""#!/usr/bin/env bash
# Build the TensorRT engines for this export on the target (Jetson AGX Orin with TensorRT-LLM v0.12.0-jetson /
# JetPack 6.1, or an x86 GPU with TensorRT-LLM): engines are specific to the GPU and the TensorRT version.
set -euo pipefail
cd "$(dirname "$0")"
# LLM: int4 weights (W4A16_AWQ), fp16 activations; image features enter as a prompt table
# (--max_multimodal_len, alias of --max_prompt_embedding_table_size)
#   = max_batch {max_batch} x frames {frames} x {tokens} tokens.
trtllm-build --checkpoint_dir llm_ckpt --output_dir llm_engine \\
  --gemm_plugin float16 --gpt_attention_plugin float16 \\
  --max_batch_size {max_batch} --max_input_len {max_input} --max_seq_len {max_input + max_new_tokens} \\
  --max_multimodal_len {mm_len}
# Vision: SigLIP + projector, fp16, batch profile 1..{max_batch * frames} (every frame of a request in one call).
trtexec --onnx=vision/vision.onnx --saveEngine=vision/visual_encoder.engine --fp16 \\
  --minShapes=pixels:1x3x{s}x{s} --optShapes=pixels:{frames}x3x{s}x{s} --maxShapes=pixels:{max_batch * frames}x3x{s}x{s}
"""
    path = out_dir / "build_engines.sh"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return numbers


def export_trtllm(model_dir: str | Path, out_dir: str | Path, max_batch: int = 1, frames: int | None = None,
                  max_input_text: int = 512, max_new_tokens: int = 256, onnx: bool = True) -> dict[str, Any]:
    from vila_ros.model.checkpoint import read_config

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = read_config(model_dir)
    if config.llm_type != "llama" or config.is_nvila:
        raise ExportError(f"{model_dir}: the TensorRT-LLM export covers VILA1.5 (Llama LLM, no image end tokens), not "
                          f"llm_cfg.model_type {config.llm_type!r} / NVILA's image_encoder")
    frames = int(frames or config.num_video_frames)
    llm = export_llm(model_dir, out)
    vision = export_vision_onnx(model_dir, out) if onnx else {
        "tokens_per_image": config.tokens_per_image, "image_size": config.image_size}
    numbers = build_script(out, llm, vision, max_batch, frames, max_input_text, max_new_tokens)
    # The tokenizer and the VILA config travel with the engines (prompt building and the prompt-table offset).
    import shutil

    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        src = Path(model_dir) / config.part_dir_name("llm") / name
        if src.is_file():
            (out / "tokenizer").mkdir(exist_ok=True)
            shutil.copy(src, out / "tokenizer" / name)
    shutil.copy(Path(model_dir) / "config.json", out / "vila_config.json")
    shutil.copy(Path(model_dir) / config.part_dir_name("vision_tower") / "preprocessor_config.json",
                out / "preprocessor_config.json")
    report = {"model": str(model_dir), "llm": llm, "vision": vision, "build": numbers,
              "prompt_table_offset": llm["vocab_size_padded"], "seconds": round(time.perf_counter() - t0, 1)}
    with open(out / "export.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return report
