"""A gpt-fast style Llama forward over a preallocated KV cache, reusing the weights of an HF LlamaForCausalLM (or
Qwen2ForCausalLM, NVILA-Lite's LLM: the same layer math, its q/k/v biases inside the projection modules; the
fp32 one-kernel step takes bias-free layers only, so Qwen2 decodes on the aten step in fp32).

Why not ``LlamaForCausalLM.forward`` with a DynamicCache: per decoded token HF builds masks, grows the cache by
concatenation, wraps outputs in dataclasses and computes logits through generic code paths; at batch 1 on CPU that
Python overhead is a large share of a small model's step. Here a step is the bare math: norms, projections (the
HF modules themselves, so int4/quantised Linear replacements drop in), RoPE from a precomputed table (built by the
model's own rotary module, so every rope type the checkpoint names is honoured), an in-place cache write and SDPA:
vila_ros.model.llama_math's reference math, run by one step object per layer (vila_ros.engine.layer_steps) that
decides once, when the decoder is built, whether a one-token step runs on our compiled kernels.
"""
from __future__ import annotations

import math
import weakref

import torch
from transformers import LlamaForCausalLM

from vila_ros.engine.layer_steps import LayerStep, choose_steps, project
from vila_ros.model.llama_math import norm_of

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


def _cpu_kernels_for(device: torch.device, dtype: torch.dtype):
    """Our compiled kernels when this model can use them (CPU, fp32 or bf16: one-token attention, and the bf16 GEMV
    for bf16 weights), else None."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return None
    from vila_ros.kernels import cpu_kernels

    return cpu_kernels()


def _weights_onto_huge_pages(modules: list[torch.nn.Module]) -> None:
    """Every parameter of ``modules`` a decode step streams, copied onto huge pages (vila_ros.kernels.huge_pages:
    on 4 KiB pages some buffers streamed at two thirds of the rate of others). Parameters stay the same
    objects (a lm_head tied to the embedding stays tied); small ones are left where they are."""
    from vila_ros.kernels import huge_pages

    for module in modules:
        for param in module.parameters():
            if param.numel() * param.element_size() >= huge_pages.HUGE_PAGE_BYTES and param.is_contiguous():
                param.data = huge_pages.copy_of(param.data)


class LlamaDecoder:
    """Prefill and decode steps of an HF LlamaForCausalLM over our KV cache. ``steps`` holds one step object per
    layer (vila_ros.engine.layer_steps), chosen here from the model's dtype, device and projections and from
    whether our compiled kernels load; ``step_names`` says which."""

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
        self._cos = self._sin = None
        self._kernels = _cpu_kernels_for(self.device, self.dtype)
        self._kv_buffer: torch.Tensor | None = None  # see new_cache
        self._kv_user: weakref.ref | None = None
        if self.device.type == "cpu":
            _weights_onto_huge_pages([*self.layers, self.norm, self.lm_head])
        if self.head_dim > KERNEL_MAX_HEAD_DIM or self.head_dim % 2:
            self._kernels = None  # the attention kernels' limits: aten's paths instead
        # Without our one-token attention, aten's SDPA runs a 16-bit cache several times slower than fp32 on CPUs
        # without bf16 matrix units, so 16-bit models then keep an fp32 cache (upcasting it every step costs
        # more). Weights stay 16-bit either way.
        sixteen_bit = self.dtype in (torch.bfloat16, torch.float16)
        bf16_cache_ok = self._kernels is not None and self.dtype == torch.bfloat16
        cpu_upcast = sixteen_bit and self.device.type == "cpu" and not bf16_cache_ok
        self.cache_dtype = torch.float32 if cpu_upcast else self.dtype
        self.steps: list[LayerStep] = choose_steps(
            self.layers, self.norm, getattr(cfg, "hidden_act", None), self.dtype, self.num_heads, self.num_kv_heads,
            self.head_dim, self._kernels)

    @property
    def step_names(self) -> list[str]:
        """Which step each layer's one-token decode takes ("aten", "f32_layer_step", "bf16_kernels",
        "int4_layer_step": see vila_ros.engine.layer_steps)."""
        return [step.name for step in self.steps]

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
        huge pages), while faulting in fresh huge pages for every request added ~350 ms to a 3b prefill."""
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
        if n == 1 and bsz == 1 and positions is None and mask is None:
            cos, sin = cos_t[start], sin_t[start]
            for step, k, v in zip(self.steps, cache.k, cache.v):
                x = step.step(x, (k, v), start, cos, sin)
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
        for step, k, v in zip(self.steps, cache.k, cache.v):
            x = step.forward(x, (k, v), start, cos, sin, mask, causal)
        cache.length = end
        return x

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the given hidden states (callers pass only the positions they sample from)."""
        return project(self._kernels, self.lm_head, norm_of(self.norm)(hidden)).float()

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)
