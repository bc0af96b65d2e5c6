"""How each decoder layer runs: one step object per layer, chosen once when the decoder is built.

Every step runs the reference math (vila_ros.model.llama_math) for a batch of tokens (prefill, batched decode,
masked steps): ``forward``. They differ in ``step``, one new token of one sequence, the hot loop of decoding:

    AtenStep         "aten"             the reference math on aten ops (any model, any device)
    F32KernelStep    "f32_layer_step"   one kernel call per layer: fp32 layers with plain nn.Linear projections
    Bf16KernelStep   "bf16_kernels"     rms_norm_bf16, rope_cache_attention, silu_mul_bf16 around the projections
    Int4KernelStep   "int4_layer_step"  one kernel call per layer: bf16 layers with unpadded int4 projections

Per token, aten's dispatch of a layer's ~30-75 small ops cost several times their arithmetic on small models and
16% of a 3b int4 token; the kernels compute the same math, bf16 rounding points included (test/engine/
test_layer_steps.py holds each to the reference).
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Protocol

import torch
from torch import nn

from vila_ros.model.llama_math import LayerOps, attention, layer_forward, norm_of

Tensor = torch.Tensor
Cache = tuple[Tensor, Tensor]  # one layer's (keys, values), [B, kv_heads, capacity, head_dim]

# Above this many rows (prefill) aten's bf16 GEMM is the faster one.
BF16_GEMV_MAX_ROWS = 4


class LayerStep(Protocol):
    name: str

    def forward(self, x: Tensor, cache: Cache, start: int, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """x [B, n, hidden] appended at cache positions [start, start + n); cos, sin broadcast against
        [B, heads, n, head_dim]; mask / causal as ``llama_math.attention`` takes them."""

    def step(self, x: Tensor, cache: Cache, position: int, cos: Tensor, sin: Tensor) -> Tensor:
        """One token x [1, 1, hidden] of one sequence at ``position``; cos, sin: that position's rows [head_dim]."""


def project(kernels: ModuleType | None, linear: nn.Module, x: Tensor) -> Tensor:
    """``linear(x)``, through our bf16 GEMV for a bf16 nn.Linear and a few rows (decode) where it loads."""
    rows = x.numel() // x.shape[-1]
    if (kernels is None or rows > BF16_GEMV_MAX_ROWS or type(linear) is not nn.Linear
            or linear.weight.dtype != torch.bfloat16 or x.dtype != torch.bfloat16
            or not linear.weight.is_contiguous()):
        return linear(x)
    y = kernels.bf16_gemv(x.reshape(rows, x.shape[-1]).contiguous(), linear.weight)
    y = y.to(x.dtype).view(*x.shape[:-1], linear.out_features)
    return y if linear.bias is None else y + linear.bias


def _kernel_attention(kernels: ModuleType, scale: float, q: Tensor, k: Tensor, v: Tensor, cache: Cache | None,
                      start: int, mask: Tensor | None, causal: bool) -> Tensor:
    """``llama_math.attention``, with one new token's attention on our kernel (it streams a bf16 or fp32 cache at
    memory speed; aten's SDPA runs a 16-bit cache several times slower than fp32 on CPUs without bf16 matrix
    units)."""
    if cache is None or mask is not None or q.shape[2] != 1:
        return attention(q, k, v, cache, start, mask, causal)
    k_cache, v_cache = cache
    k_cache[:, :, start:start + 1] = k
    v_cache[:, :, start:start + 1] = v
    return kernels.decode_attention(q, k_cache, v_cache, start + 1, scale).to(q.dtype)


def _fuse(projections: list[nn.Module]) -> nn.Module | None:
    from vila_ros.model.int4 import Int4Linear

    if not all(isinstance(p, Int4Linear) for p in projections):
        return None
    return Int4Linear.fused(projections)


def decoder_ops(layer: nn.Module, heads: int, kv_heads: int, head_dim: int, kernels: ModuleType | None,
                fused_qkv: nn.Module | None = None, fused_gate_up: nn.Module | None = None) -> LayerOps:
    """A layer's parts as the decoder runs them: fused int4 projections where they exist, our bf16 GEMV for a few
    bf16 rows and our one-token attention where the kernels load."""
    attn, mlp = layer.self_attn, layer.mlp

    def projection(linear: nn.Module):
        return linear if kernels is None else functools.partial(project, kernels, linear)

    q, k, v = (projection(p) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    gate, up = projection(mlp.gate_proj), projection(mlp.up_proj)
    qkv_sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
    gate_up_sizes = [mlp.gate_proj.out_features, mlp.up_proj.out_features]

    def qkv(h: Tensor) -> tuple[Tensor, ...]:
        return (q(h), k(h), v(h)) if fused_qkv is None else fused_qkv(h).split(qkv_sizes, dim=-1)

    def gate_up(h: Tensor) -> tuple[Tensor, ...]:
        return (gate(h), up(h)) if fused_gate_up is None else fused_gate_up(h).split(gate_up_sizes, dim=-1)

    return LayerOps(
        heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        input_norm=norm_of(layer.input_layernorm), qkv=qkv, o_proj=projection(attn.o_proj),
        post_norm=norm_of(layer.post_attention_layernorm), gate_up=gate_up, down_proj=projection(mlp.down_proj),
        act=mlp.act_fn,
        attend=attention if kernels is None else functools.partial(_kernel_attention, kernels, head_dim ** -0.5),
    )


class AtenStep:
    """The reference math for any number of tokens; one token is the n = 1 case of it."""

    name = "aten"

    def __init__(self, ops: LayerOps):
        self.ops = ops

    def forward(self, x: Tensor, cache: Cache, start: int, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        return layer_forward(self.ops, x, cos, sin, cache, start, mask, causal)

    def step(self, x: Tensor, cache: Cache, position: int, cos: Tensor, sin: Tensor) -> Tensor:
        return self.forward(x, cache, position, cos[None, None, None], sin[None, None, None])


def _norm_operands(layer: nn.Module) -> tuple:
    norm, post = layer.input_layernorm, layer.post_attention_layernorm
    return norm.weight, norm.variance_epsilon, post.weight, post.variance_epsilon


class F32KernelStep(AtenStep):
    """An fp32 layer's one-token step as one ``f32_layer_step`` call."""

    name = "f32_layer_step"

    def __init__(self, ops: LayerOps, kernels: ModuleType, operands: tuple):
        super().__init__(ops)
        self.kernels, self.operands, self.scale = kernels, operands, ops.head_dim ** -0.5

    @classmethod
    def of(cls, ops: LayerOps, layer: nn.Module, kernels: ModuleType) -> F32KernelStep | None:
        """None unless the layer's seven projections are bias-free contiguous fp32 nn.Linear modules."""
        attn, mlp = layer.self_attn, layer.mlp
        projections = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if not all(type(p) is nn.Linear and p.bias is None and p.weight.dtype == torch.float32
                   and p.weight.is_contiguous() for p in projections):
            return None
        return cls(ops, kernels, (*_norm_operands(layer), *[p.weight for p in projections]))

    def step(self, x: Tensor, cache: Cache, position: int, cos: Tensor, sin: Tensor) -> Tensor:
        return self.kernels.f32_layer_step(x, *self.operands, cos, sin, *cache, position, self.scale)


class Bf16KernelStep(AtenStep):
    """A bf16 layer's one-token step in 6-8 kernel calls: the reference math, bf16 rounding points included."""

    name = "bf16_kernels"

    def __init__(self, ops: LayerOps, layer: nn.Module, kernels: ModuleType):
        super().__init__(ops)
        self.kernels, self.scale = kernels, ops.head_dim ** -0.5
        self.input_norm, self.input_eps, self.post_norm, self.post_eps = _norm_operands(layer)

    def step(self, x: Tensor, cache: Cache, position: int, cos: Tensor, sin: Tensor) -> Tensor:
        kernels, ops = self.kernels, self.ops
        q, k, v = ops.qkv(kernels.rms_norm_bf16(x, self.input_norm, self.input_eps))
        x = x + ops.o_proj(kernels.rope_cache_attention(q, k, v, cos, sin, *cache, position, self.scale))
        gate, up = ops.gate_up(kernels.rms_norm_bf16(x, self.post_norm, self.post_eps))
        return x + ops.down_proj(kernels.silu_mul_bf16(gate, up))


class Int4KernelStep(AtenStep):
    """A bf16 layer with int4 projections: its one-token step as one ``int4_layer_step`` call."""

    name = "int4_layer_step"

    def __init__(self, ops: LayerOps, kernels: ModuleType, operands: tuple):
        super().__init__(ops)
        self.kernels, self.operands, self.scale = kernels, operands, ops.head_dim ** -0.5

    @classmethod
    def of(cls, ops: LayerOps, layer: nn.Module, kernels: ModuleType, fused_qkv: nn.Module | None,
           fused_gate_up: nn.Module | None) -> Int4KernelStep | None:
        """None unless the four projections (fused qkv, o, fused gate/up, down) are unpadded int4 of one group in
        our layout."""
        attn, mlp = layer.self_attn, layer.mlp
        projections = [fused_qkv, attn.o_proj, fused_gate_up, mlp.down_proj]
        operands = [getattr(p, "unpadded_gemv_operands", lambda: None)() for p in projections]
        if any(op is None for op in operands) or len({group for _, group in operands}) != 1:
            return None
        return cls(ops, kernels, (*_norm_operands(layer), *[tensors for tensors, _ in operands], operands[0][1],
                                  attn.q_proj.out_features, attn.k_proj.out_features))

    def step(self, x: Tensor, cache: Cache, position: int, cos: Tensor, sin: Tensor) -> Tensor:
        return self.kernels.int4_layer_step(x, *self.operands, cos, sin, *cache, position, self.scale)


def _is_rms_norm(norm: nn.Module) -> bool:
    return hasattr(norm, "variance_epsilon") and norm.weight.is_contiguous()


def _is_llama_layer(layer: nn.Module) -> bool:
    attn = layer.self_attn
    return (_is_rms_norm(layer.input_layernorm) and _is_rms_norm(layer.post_attention_layernorm)
            and all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")))


def choose_steps(layers: list[nn.Module], final_norm: nn.Module, hidden_act: str | None, dtype: torch.dtype,
                 heads: int, kv_heads: int, head_dim: int, kernels: ModuleType | None) -> list[LayerStep]:
    """The step of each layer: kernel steps where ``kernels`` (the compiled module, None for aten only) can run
    them, else the aten step. fp32 kernel steps only when every layer qualifies."""
    fused_qkv = [_fuse([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]) for layer in layers]
    fused_gate_up = [_fuse([layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in layers]
    ops = [decoder_ops(layer, heads, kv_heads, head_dim, kernels, qkv, gate_up)
           for layer, qkv, gate_up in zip(layers, fused_qkv, fused_gate_up)]
    aten: list[LayerStep] = [AtenStep(o) for o in ops]
    llama = hidden_act == "silu" and all(_is_llama_layer(layer) for layer in layers) and _is_rms_norm(final_norm)
    if kernels is None or not llama:
        return aten
    if dtype == torch.float32:
        f32 = [F32KernelStep.of(o, layer, kernels) for o, layer in zip(ops, layers)]
        return aten if any(step is None for step in f32) else f32
    if dtype == torch.bfloat16:
        return [Int4KernelStep.of(o, layer, kernels, qkv, gate_up) or Bf16KernelStep(o, layer, kernels)
                for o, layer, qkv, gate_up in zip(ops, layers, fused_qkv, fused_gate_up)]
    return aten
