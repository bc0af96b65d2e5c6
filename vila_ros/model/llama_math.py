"""The math of one Llama decoder layer, written once in plain PyTorch.

This is the reference every other path is held to: the decoder's multi-token forward runs it as written, its
one-token kernel steps (vila_ros/kernels/cpu_kernels.cpp) are tested against it, and the AWQ search replays layers
with it. Projections are callables (an nn.Linear, an int4 Linear, a fused q/k/v projection, a GEMV kernel), so the
same math runs over whatever weights a model holds; norms, RoPE, attention and the gated MLP are written out here
with HF Llama's rounding points (fp32 norm statistics, cast back to the activations' dtype before the weight).

Shapes: activations [B, n, hidden]; heads [B, heads, n, head_dim]; a KV cache layer [B, kv_heads, capacity,
head_dim] whose positions [0, start) are filled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
Project = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """LlamaRMSNorm: statistics in fp32, the normalised rows cast back to x's dtype, then the weight."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary position embedding in HF's half-split layout; cos, sin broadcast against x [B, heads, n, head_dim]."""
    return x * cos + rotate_half(x) * sin


def attention(q: Tensor, k: Tensor, v: Tensor, cache: tuple[Tensor, Tensor] | None = None, start: int = 0,
              mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """Scaled dot-product attention of q over keys/values, in q's dtype.

    cache: (keys, values) of one layer; k and v are written at positions [start, start + n) and q attends over
    [0, start + n) of the cache, in the cache's dtype. Without a cache q attends over k and v themselves.
    mask: bool, True = may attend; causal: SDPA's own top-left aligned causal mask (right only when start is 0).
    """
    if cache is not None:
        k_cache, v_cache = cache
        end = start + k.shape[2]
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        k, v = k_cache[:, :, :end], v_cache[:, :, :end]
    o = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask, is_causal=causal,
                                       enable_gqa=q.shape[1] != k.shape[1])
    return o.to(q.dtype)


Attention = Callable[[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None, int, Tensor | None, bool], Tensor]


@dataclass(frozen=True)
class LayerOps:
    """One layer's parts as the math uses them.

    qkv: normed hidden -> (q, k, v) rows [B, n, heads * head_dim] / [B, n, kv_heads * head_dim];
    gate_up: normed hidden -> (gate, up); act: the MLP's activation (SiLU for Llama);
    attend: ``attention`` or a drop-in with its signature (a one-token kernel).
    """

    heads: int
    kv_heads: int
    head_dim: int
    input_norm: Project
    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]
    o_proj: Project
    post_norm: Project
    gate_up: Callable[[Tensor], tuple[Tensor, Tensor]]
    down_proj: Project
    act: Project = F.silu
    attend: Attention = attention


def norm_of(module: nn.Module) -> Project:
    """A Llama RMSNorm module as ``rms_norm`` of its weight and epsilon (any other norm as itself)."""
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        return module
    return lambda x: rms_norm(x, module.weight, eps)


def layer_ops(layer: nn.Module, heads: int, kv_heads: int, head_dim: int) -> LayerOps:
    """The parts of an HF LlamaDecoderLayer, each projection its own module."""
    attn, mlp = layer.self_attn, layer.mlp
    return LayerOps(
        heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        input_norm=norm_of(layer.input_layernorm),
        qkv=lambda h: (attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)),
        o_proj=attn.o_proj,
        post_norm=norm_of(layer.post_attention_layernorm),
        gate_up=lambda h: (mlp.gate_proj(h), mlp.up_proj(h)),
        down_proj=mlp.down_proj,
        act=getattr(mlp, "act_fn", F.silu),
    )


def gated_mlp(ops: LayerOps, h: Tensor) -> Tensor:
    gate, up = ops.gate_up(h)
    return ops.down_proj(ops.act(gate) * up)


def layer_forward(ops: LayerOps, x: Tensor, cos: Tensor, sin: Tensor, cache: tuple[Tensor, Tensor] | None = None,
                  start: int = 0, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """One decoder layer over x [B, n, hidden] at positions start..start+n-1 (cos, sin: their RoPE rows, broadcast
    against [B, heads, n, head_dim]); see ``attention`` for cache, mask and causal."""
    bsz, n, _ = x.shape
    q, k, v = ops.qkv(ops.input_norm(x))
    q = q.view(bsz, n, ops.heads, ops.head_dim).transpose(1, 2)
    k = k.view(bsz, n, ops.kv_heads, ops.head_dim).transpose(1, 2)
    v = v.view(bsz, n, ops.kv_heads, ops.head_dim).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    o = ops.attend(q, k, v, cache, start, mask, causal)
    x = x + ops.o_proj(o.transpose(1, 2).reshape(bsz, n, ops.heads * ops.head_dim))
    return x + gated_mlp(ops, ops.post_norm(x))
