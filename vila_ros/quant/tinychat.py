"""``vila-ros convert-awq``: a TinyChat / llm-awq int4 checkpoint (``llm/*-w4-g128-awq-v2.pt``) -> our int4 format.

The public VILA1.5-*-AWQ directories keep the VILA layout with the LLM as one PyTorch file written by llm-awq
(``awq.entry --dump_quant``): the state dict of the LlamaForCausalLM whose decoder linears are llm-awq's ``WQLinear``
(v2 packing, the one TinyChat's kernels read). Per linear with N outputs, K inputs and group G:

    qweight       int16 [N/4, K]         four 4-bit values per int16, rows interleaved by 4 and reordered (below)
    scales        fp16  [Gp, N]          scale of group g of row n at [g, n]; rows >= K/G are zero padding
    scaled_zeros  fp16  [Gp, N]          -(scale * zero) with the integer zero point of the group, same padding
    W[n, k] = q[n, k] * scales[k // G, n] + scaled_zeros[k // G, n]

Gp is K/G rounded up to a multiple of 8 (of 16 for G = 64, of 32 for G = 32). The v2 order of q, as llm-awq's
``pack_intweight`` documents it: inside every 32 columns the values are taken in the order 0, 1, 8, 9, 16, 17, 24, 25,
2, 3, ... (pairs strided by 8), then inside every 8 of those the even positions come first (0, 2, 4, 6, 1, 3, 5, 7);
the rows are then grouped by 4 and, per 64-column block, the 4 x 64 values of a row group are laid out row after
row and packed four consecutive values per int16, lowest nibble first.

This is the one place where the package unpickles anything, through ``torch.load(weights_only=True)``: PyTorch's
restricted unpickler, which builds tensors and plain containers only and runs no code from the file. The output is
safetensors (``vila_ros.model.int4_checkpoint``): q, the scales rounded to bf16 (the kernels' scale dtype: each
weight moves by at most 2^-9 of its group's range) and the integer zero points.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from vila_ros.model.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    MissingPartError,
    read_config,
    save_part_weights,
)
from vila_ros.model.config import PART_NAMES
from vila_ros.model.int4 import KERNEL_GROUP_SIZES, pack_nibbles
from vila_ros.model.int4_checkpoint import ATTN_LINEARS, FORMAT, MLP_LINEARS, QUANT_METHOD

INTERLEAVE = 4  # rows per int16 group (llm-awq WQLinear.interleave)
KSTRIDE = 64  # columns per interleaved block (pack_intweight kstride)
PACK = 32  # the column block of the in-block reorder
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".index.json")
_IGNORED = ("rotary_emb.inv_freq",)  # a buffer older transformers versions saved; recomputed from the config


def _v2_order() -> torch.Tensor:
    """Stored position p of a 32-column block holds original column ``order[p]``."""
    pairs = torch.arange(PACK).reshape(4, 4, 2).transpose(0, 1).reshape(PACK)  # 0, 1, 8, 9, 16, 17, 24, 25, 2, ...
    return pairs.reshape(PACK // 8, 4, 2).transpose(1, 2).reshape(PACK)  # evens first inside every 8


V2_ORDER = _v2_order()


def unpack_v2(qweight: torch.Tensor) -> torch.Tensor:
    """llm-awq v2 ``qweight`` int16 [N/4, K] -> uint8 [N, K] values 0..15 in the natural column order."""
    if qweight.dtype != torch.int16 or qweight.dim() != 2:
        raise ValueError(f"expected an int16 matrix (llm-awq v2 packing), got {qweight.dtype} {list(qweight.shape)}")
    rows4, k = qweight.shape
    if k % KSTRIDE:
        raise ValueError(f"{k} input columns are not a multiple of {KSTRIDE}: not llm-awq's v2 packing")
    word = qweight.to(torch.int32) & 0xFFFF
    nibbles = torch.stack([(word >> (4 * j)) & 0xF for j in range(4)], dim=-1)  # [N/4, K, 4]
    # per 64-column block: 64 int16 x 4 nibbles = 4 rows x 64 columns, row after row
    blocks = nibbles.reshape(rows4, k // KSTRIDE, INTERLEAVE, KSTRIDE)
    stored = blocks.permute(0, 2, 1, 3).reshape(rows4 * INTERLEAVE, k)
    q = torch.empty_like(stored)
    q.view(-1, k // PACK, PACK)[..., V2_ORDER] = stored.view(-1, k // PACK, PACK)
    return q.to(torch.uint8)


def padded_groups(in_features: int, group: int) -> int:
    """Rows of llm-awq's scales / scaled_zeros for K inputs and group G (its calculate_zeros_width x 8)."""
    multiple = 8 * {32: 4, 64: 2}.get(group, 1)
    groups = in_features // group
    return -(-groups // multiple) * multiple


def convert_linear(qweight: torch.Tensor, scales: torch.Tensor, scaled_zeros: torch.Tensor, group: int,
                   name: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One WQLinear -> (q uint8 [N, K], scales fp32 [N, K/G], zeros uint8 [N, K/G]) with the same dequantized W."""
    q = unpack_v2(qweight)
    n, k = q.shape
    if k % group:
        raise ValueError(f"{name}: group {group} does not divide its {k} inputs")
    groups = k // group
    rows = padded_groups(k, group)
    for label, t in (("scales", scales), ("scaled_zeros", scaled_zeros)):
        if tuple(t.shape) != (rows, n):
            raise ValueError(f"{name}.{label} has shape {list(t.shape)}; group {group} with {k} inputs and {n} "
                             f"outputs implies {[rows, n]} (is the group size right? pass --group)")
        if bool(t[groups:].any()):
            raise ValueError(f"{name}.{label}: the padding rows after group {groups} are not zero (wrong group size?)")
    s = scales[:groups].t().float()
    zero = -scaled_zeros[:groups].t().float() / torch.where(s == 0, torch.ones_like(s), s)
    zeros = torch.round(zero)
    # scaled_zeros was rounded to fp16: the zero point comes back within a few thousandths of an integer
    if bool(((zero - zeros).abs() > 0.05).any()) or bool(((zeros < 0) | (zeros > 15)).any()):
        raise ValueError(f"{name}: -scaled_zeros / scales is not an integer zero point in 0..15 (not llm-awq "
                         "zero-point quantization)")
    return q, s, zeros.to(torch.uint8)


def find_awq_file(src: Path, llm_dir: Path) -> Path:
    if src.is_file():
        return src
    files = sorted(llm_dir.glob("*.pt"))
    if not files:
        raise MissingPartError(f"no TinyChat .pt in {llm_dir} (expected e.g. *-w4-g128-awq-v2.pt)", llm_dir)
    v2 = [f for f in files if f.name.endswith("v2.pt")]
    if len(v2) == 1:
        return v2[0]
    if len(files) == 1:
        return files[0]
    raise CheckpointError(f"several .pt files in {llm_dir}: {', '.join(f.name for f in files)}; pass the file", llm_dir)


def group_from_name(path: Path) -> int | None:
    match = re.search(r"-g(\d+)", path.name)
    return int(match.group(1)) if match else None


def read_tinychat(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, through PyTorch's restricted unpickler (tensors and containers only)."""
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # mmap needs the zip format; older files are read whole
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # the restricted unpickler raises UnpicklingError for anything but tensors
        raise CorruptCheckpointError(f"cannot read {path} as a tensor state dict ({type(error).__name__}: "
                                     f"{error})", path) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptCheckpointError(f"{path} does not hold a flat state dict of tensors", path)
    return {k.removeprefix("llm."): v for k, v in state.items()}


def convert_awq(src: str | Path, dst: str | Path, group: int | None = None) -> dict[str, Any]:
    """Convert the VILA-layout TinyChat checkpoint ``src`` (its directory; the .pt is found in llm/) to ``dst``."""
    src, dst = Path(src), Path(dst)
    root = src.parent.parent if src.is_file() else src
    config = read_config(root)
    llm_dir = root / config.part_dir_name("llm")
    pt = find_awq_file(src, llm_dir)
    group = group or group_from_name(pt) or 128
    if group not in KERNEL_GROUP_SIZES:
        raise ValueError(f"group size {group} has no int4 kernel here (supported: {KERNEL_GROUP_SIZES})")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty")
    state = read_tinychat(pt)
    if any(k.endswith(".qzeros") for k in state):
        raise CorruptCheckpointError(f"{pt} is llm-awq's v1 packing (qzeros): repack it to v2 with TinyChat's "
                                     "offline-weight-repacker.py, then convert", pt)
    out: dict[str, torch.Tensor] = {}
    linears = 0
    layers = int(config.llm_cfg["num_hidden_layers"])
    for i in range(layers):
        for name in [f"model.layers.{i}.self_attn.{n}" for n in ATTN_LINEARS] + \
                    [f"model.layers.{i}.mlp.{n}" for n in MLP_LINEARS]:
            parts = [f"{name}.{p}" for p in ("qweight", "scales", "scaled_zeros")]
            missing = [p for p in parts if p not in state]
            if missing:
                raise CorruptCheckpointError(f"{pt}: {missing[0]} is missing (not a llm-awq v2 Llama checkpoint)", pt)
            if f"{name}.bias" in state:
                raise CorruptCheckpointError(f"{pt}: {name} has a bias; int4 linears here are bias-free", pt)
            try:
                q, scales, zeros = convert_linear(*(state.pop(p) for p in parts), group=group, name=name)
            except ValueError as error:
                raise CorruptCheckpointError(f"{pt}: {error}", pt) from error
            out[f"{name}.qweight"] = pack_nibbles(q)
            out[f"{name}.scales"] = scales.to(torch.bfloat16).contiguous()
            out[f"{name}.zeros"] = zeros.contiguous()
            linears += 1
    for key in list(state):
        if key.endswith(_IGNORED):
            continue
        if ".qweight" in key or ".scaled_zeros" in key:
            raise CorruptCheckpointError(f"{pt}: {key} belongs to no decoder linear of llm/config.json "
                                         f"({layers} layers)", pt)
        out[key] = state.pop(key).to(torch.bfloat16)
    _write(root, config, llm_dir, dst, out, group, pt)
    return {"source": str(pt), "out": str(dst), "group_size": group, "linears": linears, "format": FORMAT}


def _write(root: Path, config: Any, llm_dir: Path, dst: Path, state: dict[str, torch.Tensor], group: int,
           pt: Path) -> None:
    qconfig = {"quant_method": QUANT_METHOD, "format": FORMAT, "bits": 4, "group_size": group, "scheme": "asym",
               "zero_point": True, "method": "awq", "modules": list(ATTN_LINEARS + MLP_LINEARS), "clip": True,
               "calibration": {"source": f"llm-awq {pt.name}"}, "short_last_group": []}
    dst.mkdir(parents=True, exist_ok=True)
    for part in PART_NAMES:
        part_src, part_dst = root / config.part_dir_name(part), dst / config.part_dir_name(part)
        if part != "llm":
            shutil.copytree(part_src, part_dst)
            continue
        part_dst.mkdir()
        for file in part_src.iterdir():  # tokenizer and generation files; the weights are rewritten
            if file.is_file() and not file.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(file, part_dst / file.name)
        save_part_weights(state, part_dst, 2 * 1024**3, always_index=True)
        llm_cfg = json.loads((part_src / "config.json").read_text(encoding="utf-8"))
        llm_cfg.update(quantization_config=qconfig, dtype="bfloat16")
        llm_cfg.pop("torch_dtype", None)
        _write_json(part_dst / "config.json", llm_cfg)
    root_cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
    root_cfg.setdefault("llm_cfg", {})["quantization_config"] = qconfig
    root_cfg["model_dtype"] = "torch.bfloat16"
    _write_json(dst / "config.json", root_cfg)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
