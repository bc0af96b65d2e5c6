"""A gpt-fast style Llama forward over a preallocated KV cache, reusing the weights of an HF LlamaForCausalLM.

Why not ``LlamaForCausalLM.forward`` with a DynamicCache: per decoded token HF builds masks, grows the cache by
concatenation, wraps outputs in dataclasses and computes logits through generic code paths; at batch 1 on CPU that
Python overhead is a large share of a small model's step. Here a step is the bare math: norms, projections (the
HF modules themselves, so int4/quantised Linear replacements drop in), RoPE from a precomputed table (built by the
model's own rotary module, so every rope type the checkpoint names is honoured), an in-place cache write and SDPA.
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM


# Above this many rows (prefill) aten's bf16 GEMM is the faster one.
BF16_GEMV_MAX_ROWS = 4
# Heads the one-token attention kernels take (kMaxHeadDim in cpu_kernels.cpp; RoPE needs an even size).
KERNEL_MAX_HEAD_DIM = 256


class KVCache:
    """Keys/values of every layer, [B, kv_heads, capacity, head_dim]; positions [0, length) are filled.

    ``storage``: a [2, num_layers, B, kv_heads, capacity, head_dim] tensor to hold them (the decoder lends its
    reusable huge-page buffer this way), else each layer gets its own.
    """

    def __init__(self, num_layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device, storage: torch.Tensor | None = None):
        shape = (batch, kv_heads, capacity, head_dim)
        if storage is not None:
            if tuple(storage.shape) != (2, num_layers, *shape) or storage.dtype != dtype:
                raise ValueError(f"KV storage {tuple(storage.shape)} {storage.dtype} does not hold "
                                 f"{(2, num_layers, *shape)} {dtype}")
            self.k, self.v = list(storage[0].unbind(0)), list(storage[1].unbind(0))
        else:
            # empty, not zeros: a slot is always written before it is read (attention only sees [0, length)), and
            # zero-filling a 3B model's cache would cost a memset of ~1 GB per request.
            self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
            self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0
        self.capacity = capacity

    def snapshot(self, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of the first n positions (what the prefix cache keeps; later writes never touch them)."""
        return [k[:, :, :n].clone() for k in self.k], [v[:, :, :n].clone() for v in self.v]

    def restore(self, snapshot: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
        """Copy a snapshot into positions [0, n): the snapshot itself stays untouched for the next caller."""
        keys, values = snapshot
        n = keys[0].shape[2]
        for dst, src in zip(self.k, keys):
            dst[:, :, :n].copy_(src)
        for dst, src in zip(self.v, values):
            dst[:, :, :n].copy_(src)
        self.length = n


def _fuse(projections: list[torch.nn.Module]) -> torch.nn.Module | None:
    from vila_ros.model.int4 import Int4Linear

    if not all(isinstance(p, Int4Linear) for p in projections):
        return None
    return Int4Linear.fused(projections)


def _cpu_kernels_for(device: torch.device, dtype: torch.dtype):
    """Our compiled kernels when this model can use them (CPU, fp32 or bf16: one-token attention, and the bf16 GEMV
    for bf16 weights), else None."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return None
    from vila_ros.kernels import cpu_kernels

    return cpu_kernels()


def _weights_onto_huge_pages(modules: list[torch.nn.Module]) -> None:
    """Every parameter of ``modules`` a decode step streams, copied onto huge pages (vila_ros.kernels.huge_pages:
    on 4 KiB pages this VM streamed some buffers at two thirds of the rate of others). Parameters stay the same
    objects (a lm_head tied to the embedding stays tied); small ones are left where they are."""
    from vila_ros.kernels import huge_pages

    for module in modules:
        for param in module.parameters():
            if param.numel() * param.element_size() >= huge_pages.HUGE_PAGE_BYTES and param.is_contiguous():
                param.data = huge_pages.copy_of(param.data)


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """HF LlamaRMSNorm's math (fp32 statistics, cast back, then the weight) in one fused op instead of six."""
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:  # not a Llama RMSNorm: let the module do its own thing
        return norm(x)
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _is_rms_norm(norm: torch.nn.Module) -> bool:
    return hasattr(norm, "variance_epsilon") and norm.weight.is_contiguous()


def _is_llama_layer(layer: torch.nn.Module) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    return (_is_rms_norm(layer.input_layernorm) and _is_rms_norm(layer.post_attention_layernorm)
            and all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaDecoder:
    def __init__(self, llm: LlamaForCausalLM):
        cfg = llm.config
        self.llm = llm
        self.embed_tokens = llm.model.embed_tokens
        self.layers = list(llm.model.layers)
        self.norm = llm.model.norm
        self.lm_head = llm.lm_head
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.max_positions = cfg.max_position_embeddings
        self.vocab_size = cfg.vocab_size
        self.gqa = self.num_kv_heads != self.num_heads
        self._cos = self._sin = None
        # One new token's attention runs on our CPU kernel where it loads (it streams a bf16 or fp32 cache at
        # memory speed: 3b shapes, 256 positions, 2 threads: ~4x aten's SDPA on bf16). Without it, aten's SDPA runs
        # a 16-bit cache several times slower than fp32 on CPUs without bf16 matrix units, so 16-bit models then
        # keep an fp32 cache (upcasting it every step costs more). Weights stay 16-bit either way.
        self._kernels = _cpu_kernels_for(self.device, self.dtype)
        self._kv_buffer: torch.Tensor | None = None  # see new_cache
        self._kv_user: weakref.ref | None = None
        if self.device.type == "cpu":
            _weights_onto_huge_pages([*self.layers, self.norm, self.lm_head])
        if self.head_dim > KERNEL_MAX_HEAD_DIM or self.head_dim % 2:
            self._kernels = None  # the attention kernels' limits: aten's paths instead
        sixteen_bit = self.dtype in (torch.bfloat16, torch.float16)
        bf16_cache_ok = self._kernels is not None and self.dtype == torch.bfloat16
        cpu_upcast = sixteen_bit and self.device.type == "cpu" and not bf16_cache_ok
        self.cache_dtype = torch.float32 if cpu_upcast else self.dtype
        self._scale = self.head_dim ** -0.5  # SDPA's default, which the other path uses
        self._fused_qkv = [_fuse([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj]) for l in self.layers]
        self._fused_gate_up = [_fuse([l.mlp.gate_proj, l.mlp.up_proj]) for l in self.layers]
        llama = getattr(cfg, "hidden_act", None) == "silu" and all(
            _is_llama_layer(layer) for layer in self.layers) and _is_rms_norm(self.norm)
        # One-token steps of bf16 Llama layers run as a few kernel calls (norms, RoPE + cache write + attention,
        # SiLU * up) instead of ~75 aten ops per layer, whose dispatch was 16% of a 3b int4 token.
        self._fused_step = bf16_cache_ok and llama
        # With int4 projections the whole layer step is one kernel call.
        self._int4_steps = [self._int4_step_operands(i) if self._fused_step else None for i in range(len(self.layers))]
        # fp32 layers with plain Linear projections (the embedded default model) too: their ~30 aten ops a layer cost
        # several times their arithmetic. None unless every layer qualifies.
        self._f32_steps: list[tuple] | None = None
        if self._kernels is not None and self.dtype == torch.float32 and llama:
            f32_steps = [self._f32_step_operands(i) for i in range(len(self.layers))]
            if all(step is not None for step in f32_steps):
                self._f32_steps = f32_steps

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """A cache for ``batch`` sequences of up to ``capacity`` positions. On CPU it lives in one huge-page buffer
        the decoder keeps and lends to the next cache once no live cache uses it: one-token attention walks each
        head's rows, and on 4 KiB pages its page walks held it to 14.5 GB/s (3b shapes, 256 positions; 18.1 on
        huge pages), while faulting in fresh huge pages for every request added ~350 ms to a 3b prefill here."""
        args = (len(self.layers), batch, self.num_kv_heads, capacity, self.head_dim, self.cache_dtype, self.device)
        if self.device.type != "cpu" or (self._kv_user is not None and self._kv_user() is not None):
            return KVCache(*args)  # not CPU, or the buffer is lent out: a cache of its own
        shape = (2, len(self.layers), batch, self.num_kv_heads, capacity, self.head_dim)
        numel = math.prod(shape)
        if self._kv_buffer is None or self._kv_buffer.numel() < numel:
            from vila_ros.kernels import huge_pages

            self._kv_buffer = None  # freed before its successor is faulted in
            self._kv_buffer = huge_pages.empty((numel,), self.cache_dtype)
        cache = KVCache(*args, storage=self._kv_buffer[:numel].view(shape))
        self._kv_user = weakref.ref(cache)
        return cache

    def _rope_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < length:
            size = max(length, 256, 0 if self._cos is None else 2 * self._cos.shape[0])
            positions = torch.arange(size, device=self.device)[None]
            probe = torch.empty(0, dtype=self.dtype, device=self.device)
            cos, sin = self.llm.model.rotary_emb(probe, positions)
            self._cos, self._sin = cos[0], sin[0]
        return self._cos, self._sin

    @torch.inference_mode()
    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, n, H] of ``x`` (input embeddings) appended at cache positions [length, length+n).

        positions: [B, n] RoPE positions (default length..length+n-1 for every row).
        mask: [B, 1, n, length+n] bool, True = may attend (default causal, all keys valid).
        """
        bsz, n, _ = x.shape
        start, end = cache.length, cache.length + n
        if end > cache.capacity:
            raise ValueError(f"KV cache full: {end} > {cache.capacity}")
        cos_t, sin_t = self._rope_tables(end)
        one_token = n == 1 and bsz == 1 and positions is None and mask is None
        if self._f32_steps is not None and one_token:
            cos, sin = cos_t[start], sin_t[start]
            for i, operands in enumerate(self._f32_steps):
                x = self._kernels.f32_layer_step(x, *operands, cos, sin, cache.k[i], cache.v[i], start, self._scale)
            cache.length = end
            return x
        if self._fused_step and one_token:
            cos, sin = cos_t[start], sin_t[start]
            for i, layer in enumerate(self.layers):
                operands = self._int4_steps[i]
                if operands is not None:
                    x = self._kernels.int4_layer_step(x, *operands, cos, sin, cache.k[i], cache.v[i], start,
                                                      self._scale)
                else:
                    x = self._fused_layer_step(i, layer, x, cache, start, cos, sin)
            cache.length = end
            return x
        if positions is None:
            cos, sin = cos_t[start:end][None, None], sin_t[start:end][None, None]
        else:
            cos, sin = cos_t[positions][:, None], sin_t[positions][:, None]
        causal = False
        if mask is None and n > 1:
            if start == 0:
                causal = True  # SDPA's own causal mask is top-left aligned: right only without a prefix
            else:
                q_pos = torch.arange(start, end, device=x.device)[:, None]
                mask = (torch.arange(end, device=x.device)[None, :] <= q_pos)[None, None]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = _rms_norm(layer.input_layernorm, x)
            if self._fused_qkv[i] is not None:
                q, k, v = self._fused_qkv[i](h).split([attn.q_proj.out_features, attn.k_proj.out_features,
                                                       attn.v_proj.out_features], dim=-1)
            else:
                q, k, v = self._project(attn.q_proj, h), self._project(attn.k_proj, h), self._project(attn.v_proj, h)
            q = q.view(bsz, n, self.num_heads, self.head_dim).transpose(1, 2)
            k = k.view(bsz, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(bsz, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.k[i][:, :, start:end] = k
            cache.v[i][:, :, start:end] = v
            if n == 1 and mask is None and self._kernels is not None:
                o = self._kernels.decode_attention(q, cache.k[i], cache.v[i], end, self._scale).to(x.dtype)
            else:
                o = F.scaled_dot_product_attention(
                    q.to(self.cache_dtype), cache.k[i][:, :, :end], cache.v[i][:, :, :end], attn_mask=mask,
                    is_causal=causal, enable_gqa=self.gqa,
                ).to(x.dtype)
            x = x + self._project(attn.o_proj, o.transpose(1, 2).reshape(bsz, n, self.num_heads * self.head_dim))
            x = x + self._mlp(i, layer.mlp, _rms_norm(layer.post_attention_layernorm, x))
        cache.length = end
        return x

    def _int4_step_operands(self, i: int) -> tuple | None:
        """What int4_layer_step takes for layer i besides the token, RoPE row and cache; None unless its four
        projections are unpadded int4 of one group in our layout."""
        layer = self.layers[i]
        attn, mlp = layer.self_attn, layer.mlp
        projections = [self._fused_qkv[i], attn.o_proj, self._fused_gate_up[i], mlp.down_proj]
        operands = [getattr(p, "unpadded_gemv_operands", lambda: None)() for p in projections]
        if any(op is None for op in operands) or len({group for _, group in operands}) != 1:
            return None
        norm, post = layer.input_layernorm, layer.post_attention_layernorm
        return (norm.weight, norm.variance_epsilon, post.weight, post.variance_epsilon,
                *[tensors for tensors, _ in operands], operands[0][1], attn.q_proj.out_features,
                attn.k_proj.out_features)

    def _f32_step_operands(self, i: int) -> tuple | None:
        """What f32_layer_step takes for layer i besides the token, RoPE row and cache; None unless its seven
        projections are bias-free contiguous fp32 nn.Linear modules."""
        layer = self.layers[i]
        attn, mlp = layer.self_attn, layer.mlp
        projections = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if not all(type(p) is torch.nn.Linear and p.bias is None and p.weight.dtype == torch.float32
                   and p.weight.is_contiguous() for p in projections):
            return None
        norm, post = layer.input_layernorm, layer.post_attention_layernorm
        return (norm.weight, norm.variance_epsilon, post.weight, post.variance_epsilon,
                *[p.weight for p in projections])

    def _fused_layer_step(self, i: int, layer: torch.nn.Module, x: torch.Tensor, cache: KVCache, position: int,
                          cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """One bf16 token [1, 1, H] through layer i, cached at ``position``: the general path's math, bf16
        rounding points included, in 6-8 kernel calls."""
        kernels, attn, mlp = self._kernels, layer.self_attn, layer.mlp
        norm = layer.input_layernorm
        h = kernels.rms_norm_bf16(x, norm.weight, norm.variance_epsilon)
        if self._fused_qkv[i] is not None:
            q, k, v = self._fused_qkv[i](h).split([attn.q_proj.out_features, attn.k_proj.out_features,
                                                   attn.v_proj.out_features], dim=-1)
        else:
            q, k, v = self._project(attn.q_proj, h), self._project(attn.k_proj, h), self._project(attn.v_proj, h)
        o = kernels.rope_cache_attention(q, k, v, cos, sin, cache.k[i], cache.v[i], position, self._scale)
        x = x + self._project(attn.o_proj, o)
        norm = layer.post_attention_layernorm
        h = kernels.rms_norm_bf16(x, norm.weight, norm.variance_epsilon)
        if self._fused_gate_up[i] is not None:
            gate, up = self._fused_gate_up[i](h).split([mlp.gate_proj.out_features, mlp.up_proj.out_features], -1)
        else:
            gate, up = self._project(mlp.gate_proj, h), self._project(mlp.up_proj, h)
        return x + self._project(mlp.down_proj, kernels.silu_mul_bf16(gate, up))

    def _mlp(self, i: int, mlp: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        fused = self._fused_gate_up[i]
        if fused is not None:
            gate, up = fused(h).split([mlp.gate_proj.out_features, mlp.up_proj.out_features], dim=-1)
        elif all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):  # LlamaMLP's math
            gate, up = self._project(mlp.gate_proj, h), self._project(mlp.up_proj, h)
        else:
            return mlp(h)
        return self._project(mlp.down_proj, mlp.act_fn(gate) * up)

    def _project(self, linear: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``linear(x)``, through our bf16 GEMV for a bf16 nn.Linear and a few rows (decode) where it loads."""
        rows = x.numel() // x.shape[-1]
        if (self._kernels is None or rows > BF16_GEMV_MAX_ROWS or type(linear) is not torch.nn.Linear
                or linear.weight.dtype != torch.bfloat16 or x.dtype != torch.bfloat16
                or not linear.weight.is_contiguous()):
            return linear(x)
        y = self._kernels.bf16_gemv(x.reshape(rows, x.shape[-1]).contiguous(), linear.weight)
        y = y.to(x.dtype).view(*x.shape[:-1], linear.out_features)
        return y if linear.bias is None else y + linear.bias

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the given hidden states (callers pass only the positions they sample from)."""
        return self._project(self.lm_head, _rms_norm(self.norm, hidden)).float()

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)
