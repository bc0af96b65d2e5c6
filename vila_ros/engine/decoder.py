"""A gpt-fast style Llama forward over a preallocated KV cache, reusing the weights of an HF LlamaForCausalLM.

Why not ``LlamaForCausalLM.forward`` with a DynamicCache: per decoded token HF builds masks, grows the cache by
concatenation, wraps outputs in dataclasses and computes logits through generic code paths; at batch 1 on CPU that
Python overhead is a large share of a small model's step. Here a step is the bare math: norms, projections (the
HF modules themselves, so int4/quantised Linear replacements drop in), RoPE from a precomputed table (built by the
model's own rotary module, so every rope type the checkpoint names is honoured), an in-place cache write and SDPA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM


class KVCache:
    """Keys/values of every layer, [B, kv_heads, capacity, head_dim]; positions [0, length) are filled."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (batch, kv_heads, capacity, head_dim)
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
    from vila_ros.quant.int4 import Int4Linear  # engine -> quant only for int4 models

    if not all(isinstance(p, Int4Linear) for p in projections):
        return None
    return Int4Linear.fused(projections)


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """HF LlamaRMSNorm's math (fp32 statistics, cast back, then the weight) in one fused op instead of six."""
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:  # not a Llama RMSNorm: let the module do its own thing
        return norm(x)
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


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
        # CPUs without bf16 matrix units run 16-bit attention several times slower than fp32 (measured on this
        # machine: 3B-shaped decode attention 0.44 ms per layer bf16 vs 0.07 ms with an fp32 cache), and
        # upcasting the cache every step costs more than keeping it in fp32. Weights stay 16-bit.
        sixteen_bit = self.dtype in (torch.bfloat16, torch.float16)
        self.cache_dtype = torch.float32 if sixteen_bit and self.device.type == "cpu" else self.dtype
        self._fused_qkv = [_fuse([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj]) for l in self.layers]
        self._fused_gate_up = [_fuse([l.mlp.gate_proj, l.mlp.up_proj]) for l in self.layers]

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache(len(self.layers), batch, self.num_kv_heads, capacity, self.head_dim, self.cache_dtype,
                       self.device)

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
                q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
            q = q.view(bsz, n, self.num_heads, self.head_dim).transpose(1, 2)
            k = k.view(bsz, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(bsz, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.k[i][:, :, start:end] = k
            cache.v[i][:, :, start:end] = v
            o = F.scaled_dot_product_attention(
                q.to(self.cache_dtype), cache.k[i][:, :, :end], cache.v[i][:, :, :end], attn_mask=mask,
                is_causal=causal, enable_gqa=self.gqa,
            ).to(x.dtype)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(bsz, n, self.num_heads * self.head_dim))
            x = x + self._mlp(i, layer.mlp, _rms_norm(layer.post_attention_layernorm, x))
        cache.length = end
        return x

    def _mlp(self, i: int, mlp: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        fused = self._fused_gate_up[i]
        if fused is None:
            return mlp(h)
        gate, up = fused(h).split([mlp.gate_proj.out_features, mlp.up_proj.out_features], dim=-1)
        return mlp.down_proj(mlp.act_fn(gate) * up)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the given hidden states (callers pass only the positions they sample from)."""
        return self.lm_head(_rms_norm(self.norm, hidden)).float()

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)
