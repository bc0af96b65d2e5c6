"""AWQ (activation-aware weight quantization) and round-to-nearest for the LLM's linear layers.

Layer by layer, on calibration activations (embedded multimodal prompts, see ``calib.py``):

1. run the decoder layer on its inputs, capturing the input of every linear (per-channel mean |x| over all tokens,
   plus a random subset of ``max_tokens`` token rows for the losses); the layer's outputs feed the next layer;
2. for each scale-sharing group, grid-search alpha in [0, 1) (``grid`` points): s = mean|x|^alpha (normalised by
   sqrt(max * min)), loss = MSE between the group's float outputs x W^T and (x / s) Q(W * s)^T over the sampled
   tokens. alpha = 0 is s = 1, i.e. round-to-nearest, so the search never does worse than RTN on its own data.
   The groups and where 1/s is folded (so the model computes the same function before quantization):
       input_layernorm  -> q, k, v      (norm weight / s)
       v_proj           -> o_proj       (v_proj rows / s; only when v's outputs are o's inputs, i.e. no GQA)
       post_attn_norm   -> gate, up     (norm weight / s)
       up_proj          -> down_proj    (up_proj rows / s: act(gate) * up is linear in up)
3. optional clipping search (not for q/k, whose errors the softmax amplifies): per output row and group, shrink
   the quantization range by r in (1 - max_shrink, 1] minimising that group's output error on sampled tokens;
4. quantize every linear (``vila_ros.model.int4.quantize_weight``, group ``group``, ``asym`` or ``sym``).

``quantize_llm`` modifies the LLM in place (folded scales) and returns the int4 tensors per linear name; the search
runs in fp32 whatever the model dtype.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vila_ros.model import llama_math
from vila_ros.model.int4 import dequantize_weight, fake_quantize, num_groups, quantize_weight
from vila_ros.model.int4_checkpoint import ATTN_LINEARS, MLP_LINEARS, QTensors, linear_names

METHODS = ("awq", "rtn")


@dataclass
class QuantSpec:
    method: str = "awq"
    group_size: int = 128
    scheme: str = "asym"
    clip: bool = True
    grid: int = 20
    max_tokens: int = 512  # token rows kept per layer for the scale-search losses
    clip_tokens: int = 256  # token rows for the clipping search
    max_shrink: float = 0.5
    seed: int = 0
    threads: int = 0  # torch threads for the search; 0 = auto (1 for hidden <= 1024, see _search_threads)
    scales: dict = field(default_factory=dict)  # filled: per group the chosen alpha (reported in the config)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("scales")
        return d


def check_group_size(llm: nn.Module, group: int) -> list[str]:
    """Linears whose in_features the group does not divide (they get a shorter last group): a warning list."""
    out = []
    for name in linear_names(llm):
        k = llm.get_submodule(name).in_features
        if k % group:
            out.append(f"{name} (in_features {k})")
    return out


# ------------------------------------------------------------------------------------------------- layer forward
def layer_forward(layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cfg: Any) -> torch.Tensor:
    """One Llama decoder layer over a whole causal sequence x [B, L, H], no cache (vila_ros.model.llama_math)."""
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    ops = llama_math.layer_ops(layer, heads, cfg.num_key_value_heads, head_dim)
    n = x.shape[1]
    return llama_math.layer_forward(ops, x, cos[:n][None, None].to(x.dtype), sin[:n][None, None].to(x.dtype),
                                    causal=True)


def rope_tables(llm: nn.Module, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(length)[None]
    probe = torch.empty(0, dtype=torch.float32)
    cos, sin = llm.model.rotary_emb(probe, positions)
    return cos[0].float(), sin[0].float()


class _Capture:
    """Forward-pre hooks on a layer's linears: mean |x| per channel over all tokens and a token-row sample."""

    POINTS = {"qkv": "self_attn.q_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_proj", "down": "mlp.down_proj"}

    def __init__(self, layer: nn.Module, keep: Sequence[torch.Tensor]):
        self.keep = list(keep)  # per sample: indices of the token rows kept
        self.sample = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.rows: dict[str, list[torch.Tensor]] = {k: [] for k in self.POINTS}
        self.handles = [layer.get_submodule(path).register_forward_pre_hook(self._hook(key))
                        for key, path in self.POINTS.items()]

    def _hook(self, key: str) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            total = x.abs().sum(0)
            self.sums[key] = total if key not in self.sums else self.sums[key] + total
            self.rows[key].append(x[self.keep[self.sample]])
        return hook

    def close(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        for h in self.handles:
            h.remove()
        return {k: (self.sums[k] / self.count, torch.cat(self.rows[k])) for k in self.POINTS}


# ---------------------------------------------------------------------------------------------------- search
def _quant_error(x: torch.Tensor, weights: Sequence[torch.Tensor], ref: torch.Tensor, s: torch.Tensor,
                 spec: QuantSpec) -> float:
    outs = [(x / s) @ fake_quantize(w * s, spec.group_size, spec.scheme).t() for w in weights]
    return float((torch.cat(outs, dim=-1) - ref).pow(2).mean())


@torch.no_grad()
def search_scale(x: torch.Tensor, x_mean: torch.Tensor, weights: Sequence[torch.Tensor], spec: QuantSpec
                 ) -> tuple[torch.Tensor, float, float, float]:
    """Best per-channel scale for the weights sharing input x: (s, alpha, loss, rtn_loss)."""
    ref = torch.cat([x @ w.t() for w in weights], dim=-1)
    ones = torch.ones_like(x_mean)
    rtn = _quant_error(x, weights, ref, ones, spec)
    best = (ones, 0.0, rtn)
    base = x_mean.clamp_min(1e-6)
    for step in range(1, spec.grid):
        alpha = step / spec.grid
        s = base.pow(alpha)
        s = s / math.sqrt(float(s.max() * s.min()))
        loss = _quant_error(x, weights, ref, s, spec)
        if loss < best[2]:
            best = (s, alpha, loss)
    return best[0], best[1], best[2], rtn


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, spec: QuantSpec, row_batch: int = 256) -> torch.Tensor:
    """Per (output row, group) range ratio in (1 - max_shrink, 1] minimising the group's output error."""
    n, k = w.shape
    g = spec.group_size
    groups = num_groups(k, g)
    xg = F.pad(x, (0, groups * g - k)).reshape(x.shape[0], groups, g)
    best = torch.ones(n, groups)
    steps = max(1, int(spec.max_shrink * spec.grid))
    for r0 in range(0, n, row_batch):
        wc = w[r0:r0 + row_batch]
        wg = F.pad(wc, (0, groups * g - k)).reshape(wc.shape[0], groups, g)
        ref = torch.einsum("tGg,nGg->nGt", xg, wg)
        min_err = torch.full((wc.shape[0], groups), float("inf"))
        ratios = torch.ones(wc.shape[0], groups)
        for i in range(steps):
            r = 1.0 - i / spec.grid
            clip = torch.full((wc.shape[0], groups), r)
            wq = fake_quantize(wc, g, spec.scheme, clip=clip)
            wq = F.pad(wq, (0, groups * g - k)).reshape(wc.shape[0], groups, g)
            err = (torch.einsum("tGg,nGg->nGt", xg, wq) - ref).pow(2).mean(-1)
            better = err < min_err
            min_err = torch.where(better, err, min_err)
            ratios = torch.where(better, torch.full_like(ratios, r), ratios)
        best[r0:r0 + row_batch] = ratios
    return best


def _fold_into_norm(norm: nn.Module, linears: Sequence[nn.Linear], s: torch.Tensor) -> None:
    norm.weight.div_(s.to(norm.weight.dtype))
    for lin in linears:
        lin.weight.mul_(s.to(lin.weight.dtype)[None])


def _fold_into_rows(prev: nn.Linear, lin: nn.Linear, s: torch.Tensor) -> None:
    prev.weight.div_(s.to(prev.weight.dtype)[:, None])
    lin.weight.mul_(s.to(lin.weight.dtype)[None])


# ------------------------------------------------------------------------------------------------------ driver
@contextlib.contextmanager
def _search_threads(threads: int, hidden: int) -> Iterator[None]:
    """The search is thousands of small tensor ops: on a small model, intra-op threads only add synchronisation,
    and with another busy process on the cores that costs 30x (measured: 38.9 s vs 1.3 s for a 4-layer, 256-wide
    LLM on 2 shared cores). One thread unless told otherwise or the matrices are large."""
    previous = torch.get_num_threads()
    wanted = threads or (1 if hidden <= 1024 else previous)
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def quantize_llm(llm: nn.Module, calib: Sequence[torch.Tensor] | None, spec: QuantSpec,
                 progress: Callable[[str], None] | None = None) -> tuple[QTensors, dict[str, Any]]:
    """Quantize every decoder linear of ``llm`` (in place: AWQ scales are folded in) -> (int4 tensors, report).

    calib: input embeddings, one [1, L, hidden] tensor per sample (required for AWQ, ignored by RTN).
    """
    say = progress or (lambda _m: None)
    if spec.method == "awq" and not calib:
        raise ValueError("AWQ needs calibration samples (--calib sim or a LLaVA JSON file)")
    with _search_threads(spec.threads, int(llm.config.hidden_size)):
        return _quantize_llm(llm, calib, spec, say)


def _quantize_llm(llm: nn.Module, calib: Sequence[torch.Tensor] | None, spec: QuantSpec,
                  say: Callable[[str], None]) -> tuple[QTensors, dict[str, Any]]:
    layers = list(llm.model.layers)
    report: dict[str, Any] = {"layers": []}
    out: QTensors = {}
    gen = torch.Generator().manual_seed(spec.seed)
    if spec.method == "awq":
        hs = [h.detach().float() for h in calib]
        cos, sin = rope_tables(llm, max(h.shape[1] for h in hs))
        total = sum(h.shape[1] for h in hs)
        per = [max(1, round(spec.max_tokens * h.shape[1] / total)) for h in hs]
    for i, layer in enumerate(layers):
        dtype = next(layer.parameters()).dtype
        layer.float()
        prefix = f"model.layers.{i}"
        attn, mlp = layer.self_attn, layer.mlp
        clips: dict[str, torch.Tensor] = {}
        entry: dict[str, Any] = {"layer": i}
        if spec.method == "awq":
            keep = [torch.randperm(h.shape[1], generator=gen)[: min(p, h.shape[1])] for h, p in zip(hs, per)]
            cap = _Capture(layer, keep)
            nxt = []
            for j, h in enumerate(hs):
                cap.sample = j
                nxt.append(layer_forward(layer, h, cos, sin, llm.config))
            cap.count = total
            stats = cap.close()
            hs = nxt
            groups = [
                ("qkv", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], None),
                ("o", None, [attn.o_proj], attn.v_proj),
                ("gate_up", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], None),
                ("down", None, [mlp.down_proj], mlp.up_proj),
            ]
            inputs: dict[str, torch.Tensor] = {}
            for key, norm, linears, prev in groups:
                x_mean, x = stats[key]
                if prev is not None and prev.out_features != linears[0].in_features:
                    inputs[key] = x  # GQA: v's outputs are not o's inputs one to one; no scale for this pair
                    entry[key] = {"alpha": None}
                    continue
                s, alpha, loss, rtn = search_scale(x, x_mean, [lin.weight.float() for lin in linears], spec)
                if norm is not None:
                    _fold_into_norm(norm, linears, s)
                else:
                    _fold_into_rows(prev, linears[0], s)
                inputs[key] = x / s
                entry[key] = {"alpha": alpha, "loss": loss, "rtn_loss": rtn}
            if spec.clip:
                for key, name, lin in [("qkv", "v_proj", attn.v_proj), ("o", "o_proj", attn.o_proj),
                                       ("gate_up", "gate_proj", mlp.gate_proj), ("gate_up", "up_proj", mlp.up_proj),
                                       ("down", "down_proj", mlp.down_proj)]:
                    x = inputs[key]
                    rows = x[torch.randperm(x.shape[0], generator=gen)[: spec.clip_tokens]]
                    clips[name] = search_clip(rows, lin.weight.float(), spec)
        for name in ATTN_LINEARS + MLP_LINEARS:
            lin = (attn if name in ATTN_LINEARS else mlp).get_submodule(name)
            q, scales, zeros = quantize_weight(lin.weight.float(), spec.group_size, spec.scheme, clips.get(name))
            full = f"{prefix}.{'self_attn' if name in ATTN_LINEARS else 'mlp'}.{name}"
            out[full] = (q, scales.to(torch.bfloat16), zeros)
        layer.to(dtype)
        report["layers"].append(entry)
        say(f"layer {i + 1}/{len(layers)} quantized"
            + (" alphas " + " ".join(f"{k}={v['alpha']}" for k, v in entry.items() if isinstance(v, dict))
               if spec.method == "awq" else ""))
    return out, report


def fake_quantize_llm(llm: nn.Module, qtensors: QTensors, group: int) -> None:
    """Replace each quantized linear's float weight by its dequantized int4 weight (the reference model)."""
    for name, (q, scales, zeros) in qtensors.items():
        lin = llm.get_submodule(name)
        lin.weight.data.copy_(dequantize_weight(q, scales, zeros, group).to(lin.weight.dtype))
