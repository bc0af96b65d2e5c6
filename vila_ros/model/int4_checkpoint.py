"""The int4 checkpoint: a VILA1.5 directory whose ``llm/`` holds int4 linears (format ``vila_ros_int4/v1``).

Everything but the decoder linears is the ordinary bf16 checkpoint (``vila_ros.model.checkpoint``): vision tower,
projector, embeddings, norms and lm_head are bf16 tensors under their usual names. Each quantized linear
``model.layers.{i}.self_attn.{q,k,v,o}_proj`` / ``model.layers.{i}.mlp.{gate,up,down}_proj`` has, instead of
``.weight`` [out, in]:

    <linear>.qweight  uint8 [out, ceil(in/2)]   int4 values q in 0..15; byte c = q[:, 2c] | q[:, 2c+1] << 4
    <linear>.scales   bf16  [out, ceil(in/G)]   one scale per row and group of G input columns
    <linear>.zeros    uint8 [out, ceil(in/G)]   integer zero point per row and group (8 everywhere for sym)

    W[o, c] = (q[o, c] - zeros[o, c // G]) * scales[o, c // G]

Group j covers input columns [j*G, min((j+1)*G, in)): when G does not divide ``in`` the last group is shorter.
AWQ scales are already folded into the preceding norms / linears (no extra tensors). ``llm/config.json`` (and the
root config's ``llm_cfg``) gain::

    "quantization_config": {"quant_method": "vila_ros_int4", "format": "vila_ros_int4/v1", "method": "awq" | "rtn",
                            "bits": 4, "group_size": G, "scheme": "asym" | "sym", "zero_point": bool,
                            "modules": ["q_proj", ...], "clip": bool, "calibration": {...}}

``quant_method`` is deliberately not HF's "awq" (whose qweight is int32 [in, out/8] in AutoAWQ's order): a tool
expecting that layout refuses this file instead of misreading it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vila_ros.model.checkpoint import (
    CheckpointError,
    MissingPartError,
    build_uninitialized,
    load_tokenizer,
    load_weights,
    read_config,
    save_vila,
    weight_files,
)
from vila_ros.model.config import PART_NAMES
from vila_ros.model.int4 import Int4Linear, quantize_weight
from vila_ros.model.preprocess import ImageProcessor
from vila_ros.model.vila import VilaModel

FORMAT = "vila_ros_int4/v1"
QUANT_METHOD = "vila_ros_int4"
ATTN_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")

# int4 tensors per linear name (``linear_names``): q uint8 [out, in] in 0..15, scales [out, groups], zeros uint8
QTensors = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class NotQuantizedError(CheckpointError, NotImplementedError):
    """int4 was asked of a float checkpoint: quantizing on the fly is not implemented (run vila-ros quantize)."""


def linear_names(llm: nn.Module) -> list[str]:
    """Names (in llm.state_dict() terms, without '.weight') of every linear quantized, in layer order."""
    names = []
    for i in range(len(llm.model.layers)):
        names += [f"model.layers.{i}.self_attn.{n}" for n in ATTN_LINEARS]
        names += [f"model.layers.{i}.mlp.{n}" for n in MLP_LINEARS]
    return names


def replace_linears(llm: nn.Module, qtensors: QTensors, group: int) -> None:
    """Swap each quantized nn.Linear for an Int4Linear holding its int4 tensors (storage format)."""
    for name, (q, scales, zeros) in qtensors.items():
        parent_name, child = name.rsplit(".", 1)
        parent = llm.get_submodule(parent_name)
        old = getattr(parent, child)
        if old.bias is not None:
            raise ValueError(f"{name} has a bias: int4 linears are bias-free (Llama attention_bias/mlp_bias false)")
        setattr(parent, child, Int4Linear.from_quantized(q, scales, zeros, group))


def quantize_rtn(llm: nn.Module, group: int = 128) -> nn.Module:
    """Every decoder linear rounded to nearest (no AWQ search) and swapped for a prepared Int4Linear, in place: the
    int4 model of benches and tests, with no checkpoint on disk."""
    for name in linear_names(llm):
        q, scales, zeros = quantize_weight(llm.get_submodule(name).weight.detach().float(), group)
        replace_linears(llm, {name: (q, scales.to(torch.bfloat16), zeros)}, group)
        llm.get_submodule(name).prepare()
    return llm


def quant_config_of(path: str | Path) -> dict[str, Any] | None:
    """The ``quantization_config`` of a checkpoint's llm/config.json, or None for a float checkpoint."""
    config = read_config(path)
    qc = config.llm_cfg.get("quantization_config")
    return dict(qc) if isinstance(qc, dict) else None


def save_quantized(model: VilaModel, qtensors: QTensors, out_dir: str | Path, qconfig: dict[str, Any]) -> Path:
    """Write ``model`` (its LLM linears replaced by ``qtensors``) as an int4 checkpoint; the rest in bf16."""
    group = int(qconfig["group_size"])
    missing = sorted(set(linear_names(model.llm)) - set(qtensors))
    if missing:
        raise ValueError(f"no int4 tensors for {len(missing)} linears, e.g. {missing[0]}")
    model.to(torch.bfloat16)
    replace_linears(model.llm, qtensors, group)
    full = {"quant_method": QUANT_METHOD, "format": FORMAT, "bits": 4,
            "modules": list(ATTN_LINEARS + MLP_LINEARS), **qconfig}
    full["zero_point"] = full.get("scheme", "asym") == "asym"
    root = save_vila(model, out_dir)
    llm_dir = root / model.config.part_dir_name("llm")
    with open(llm_dir / "config.json", encoding="utf-8") as f:
        llm_cfg = json.load(f)
    llm_cfg["quantization_config"] = full
    _write_json(llm_dir / "config.json", llm_cfg)
    with open(root / "config.json", encoding="utf-8") as f:
        root_cfg = json.load(f)
    root_cfg["llm_cfg"]["quantization_config"] = full
    _write_json(root / "config.json", root_cfg)
    return root


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def load_quantized_vila(path: str | Path, device: str | torch.device = "cpu", prepare: bool = True) -> VilaModel:
    """Load an int4 checkpoint: bf16 modules, Int4Linear decoder linears (kernel layout unless prepare=False)."""
    root = Path(path)
    config = read_config(root)
    qc = config.llm_cfg.get("quantization_config")
    llm_dir = root / config.part_dir_name("llm")
    if not isinstance(qc, dict):
        raise NotQuantizedError(
            f"{llm_dir / 'config.json'} has no quantization_config: {root} is a float checkpoint and int4 needs a "
            f"quantized one (format {FORMAT}); quantizing on the fly is not implemented. "
            f"Run: vila-ros quantize --model {root} --out DIR", llm_dir / "config.json")
    if qc.get("format") != FORMAT or int(qc.get("bits", 0)) != 4:
        raise NotQuantizedError(f"{llm_dir / 'config.json'}: unsupported quantization_config "
                                f"(format {qc.get('format')!r}, bits {qc.get('bits')}); expected {FORMAT}, 4 bits",
                                llm_dir / "config.json")
    group = int(qc["group_size"])
    vt_dir = root / config.part_dir_name("vision_tower")
    if not (vt_dir / "preprocessor_config.json").is_file():
        raise MissingPartError(f"missing {vt_dir / 'preprocessor_config.json'}", vt_dir / "preprocessor_config.json")
    image_processor = ImageProcessor.load(vt_dir / "preprocessor_config.json", aspect_ratio=config.image_aspect_ratio)
    tokenizer = load_tokenizer(llm_dir)
    for part in PART_NAMES:
        weight_files(root / config.part_dir_name(part))
    config.llm_cfg = {k: v for k, v in config.llm_cfg.items() if k != "quantization_config"}
    model = build_uninitialized(config, torch.bfloat16, device, tokenizer=tokenizer, image_processor=image_processor)
    config.llm_cfg["quantization_config"] = qc
    for name in linear_names(model.llm):
        parent_name, child = name.rsplit(".", 1)
        parent = model.llm.get_submodule(parent_name)
        old = getattr(parent, child)
        setattr(parent, child, Int4Linear(old.in_features, old.out_features, group, device=device))
    load_weights(model, root, config)
    if prepare:
        for module in model.llm.modules():
            if isinstance(module, Int4Linear):
                module.prepare()
    return model.eval()


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer, int4 kernel tensors included (what the weights hold resident)."""
    total = 0
    seen: set[int] = set()
    for m in module.modules():
        if isinstance(m, Int4Linear):
            total += m.resident_bytes()
            continue
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is None or t.data_ptr() in seen or t.numel() == 0:
                continue
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
