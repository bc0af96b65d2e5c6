"""The reference Llama layer math against HF's layer, and every decoder layer step against the reference math on
random layers: one token at a position over a cache whose earlier positions hold random keys and values.

Tolerances are fp32 / bf16 rounding of sums taken in another order; each comparison also checks that the reference
at the neighbouring position (a RoPE or cache-offset slip) lies well outside the tolerance, so it can catch one.
"""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vila_ros.engine.layer_steps import (
    AtenStep,
    Bf16KernelStep,
    F32KernelStep,
    Int4KernelStep,
    choose_steps,
    decoder_ops,
)
from vila_ros.model import llama_math
from vila_ros.model.int4_checkpoint import quantize_rtn

HEADS, KV_HEADS, HEAD_DIM, CAPACITY = 4, 2, 64, 40


def random_llama(dtype: torch.dtype, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(
        hidden_size=HEADS * HEAD_DIM, intermediate_size=384, num_hidden_layers=layers, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, vocab_size=64, max_position_embeddings=CAPACITY,
        initializer_range=0.08))  # attention far from uniform, a layer's output far from its input
    for norm in [m for m in llm.modules() if hasattr(m, "variance_epsilon")]:
        norm.weight.data.uniform_(0.5, 1.5)  # not all ones: a norm weight applied twice or not at all shows
    return llm.to(dtype).eval()


def rope(llm: LlamaForCausalLM) -> tuple[torch.Tensor, torch.Tensor]:
    probe = torch.empty(0, dtype=llm.dtype)
    cos, sin = llm.model.rotary_emb(probe, torch.arange(CAPACITY)[None])
    return cos[0], sin[0]


def random_cache(dtype: torch.dtype, batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, KV_HEADS, CAPACITY, HEAD_DIM, generator=gen).to(dtype) for _ in range(2))


def reference_step(llm, i, x, cache, position, cos, sin):
    """The reference math over the layer's own modules (aten ops), on a copy of the cache."""
    ops = llama_math.layer_ops(llm.model.layers[i], HEADS, KV_HEADS, HEAD_DIM)
    cache = tuple(t.clone() for t in cache)
    with torch.inference_mode():
        out = llama_math.layer_forward(ops, x, cos[position][None, None, None], sin[position][None, None, None],
                                       cache, position)
    return out, cache


def check_step(llm, steps, kind, tolerance: float, cache_tolerance: float):
    dtype = llm.dtype
    cos, sin = rope(llm)
    gen = torch.Generator().manual_seed(2)
    for i, step in enumerate(steps):
        assert isinstance(step, kind)
        for position in (0, 17, CAPACITY - 1):
            x = (torch.randn(1, 1, HEADS * HEAD_DIM, generator=gen) * 0.25).to(dtype)  # small: the output's rounding
            cache = random_cache(dtype, seed=position)
            cache[0][:, :, position + 1:] = float("nan")  # past the new token: never read
            cache[1][:, :, position + 1:] = float("nan")
            ref, ref_cache = reference_step(llm, i, x, cache, position, cos, sin)
            with torch.inference_mode():
                got = step.step(x, cache, position, cos[position], sin[position])
            scale = float((ref.float() - x.float()).abs().max())  # what the layer adds to its input
            error = float((got.float() - ref.float()).abs().max())
            assert got.shape == ref.shape and got.dtype == dtype
            assert error <= tolerance * scale, (kind.name, i, position, error, scale)
            for a, b in zip(cache, ref_cache):
                a, b = a[:, :, :position + 1].float(), b[:, :, :position + 1].float()
                assert torch.allclose(a, b, rtol=cache_tolerance, atol=cache_tolerance * float(b.abs().max()))
            if position:
                wrong, _ = reference_step(llm, i, x, cache, position - 1, cos, sin)
                assert float((wrong.float() - ref.float()).abs().max()) > 5 * tolerance * scale


def test_reference_layer_equals_hf_llama_layer():
    llm = random_llama(torch.float32, layers=1)
    layer = llm.model.layers[0]
    x = torch.randn(2, 9, HEADS * HEAD_DIM)
    cos, sin = rope(llm)
    with torch.no_grad():
        ref = layer(x, position_embeddings=(cos[:9][None], sin[:9][None]))
        ref = ref[0] if isinstance(ref, tuple) else ref
        ops = llama_math.layer_ops(layer, HEADS, KV_HEADS, HEAD_DIM)
        plain = llama_math.layer_forward(ops, x, cos[:9][None, None], sin[:9][None, None], causal=True)
        cache = random_cache(torch.float32, batch=2)
        cached = llama_math.layer_forward(ops, x, cos[:9][None, None], sin[:9][None, None], cache, 0, causal=True)
    assert torch.allclose(plain, ref, atol=1e-5, rtol=1e-5), (plain - ref).abs().max()
    assert torch.equal(cached, plain)
    keys = llama_math.apply_rope(layer.self_attn.k_proj(layer.input_layernorm(x)).view(2, 9, KV_HEADS, HEAD_DIM)
                                 .transpose(1, 2), cos[:9][None, None], sin[:9][None, None])
    assert torch.allclose(cache[0][:, :, :9], keys, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_equals_hf(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(100, eps=1e-5)
    norm.weight.data.uniform_(0.5, 1.5)
    norm = norm.to(dtype)
    x = (torch.randn(3, 1, 100) * 4).to(dtype)
    with torch.no_grad():
        assert torch.equal(llama_math.rms_norm(x, norm.weight, 1e-5), norm(x))


def test_bf16_kernels_equal_the_reference_functions(our_kernels):
    gen = torch.Generator().manual_seed(3)
    weight = (torch.rand(300, generator=gen) + 0.5).to(torch.bfloat16)
    x = (torch.randn(2, 1, 300, generator=gen) * 4).to(torch.bfloat16)
    assert torch.equal(our_kernels.rms_norm_bf16(x, weight, 1e-6), llama_math.rms_norm(x, weight, 1e-6))
    gate, up = ((torch.randn(1, 1, 300, generator=gen) * 6).to(torch.bfloat16) for _ in range(2))
    assert torch.equal(our_kernels.silu_mul_bf16(gate, up), torch.nn.functional.silu(gate) * up)


def test_f32_kernel_step_equals_the_reference(our_kernels):
    llm = random_llama(torch.float32)
    steps = choose_steps(list(llm.model.layers), llm.model.norm, "silu", torch.float32, HEADS, KV_HEADS, HEAD_DIM,
                         our_kernels)
    check_step(llm, steps, F32KernelStep, tolerance=2e-5, cache_tolerance=1e-5)


def test_bf16_kernel_step_equals_the_reference(our_kernels):
    llm = random_llama(torch.bfloat16)
    steps = choose_steps(list(llm.model.layers), llm.model.norm, "silu", torch.bfloat16, HEADS, KV_HEADS, HEAD_DIM,
                         our_kernels)
    check_step(llm, steps, Bf16KernelStep, tolerance=0.02, cache_tolerance=0.02)


def test_int4_kernel_step_equals_the_reference(our_kernels):
    llm = quantize_rtn(random_llama(torch.bfloat16))
    steps = choose_steps(list(llm.model.layers), llm.model.norm, "silu", torch.bfloat16, HEADS, KV_HEADS, HEAD_DIM,
                         our_kernels)
    check_step(llm, steps, Int4KernelStep, tolerance=0.02, cache_tolerance=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_aten_step_with_kernel_attention_equals_the_reference(our_kernels, dtype):
    """A batch of one-token rows (no mask) attends through decode_attention; a masked batch through SDPA."""
    llm = random_llama(dtype, layers=1)
    layer = llm.model.layers[0]
    step = AtenStep(decoder_ops(layer, HEADS, KV_HEADS, HEAD_DIM, our_kernels))
    plain = llama_math.layer_ops(layer, HEADS, KV_HEADS, HEAD_DIM)
    cos, sin = rope(llm)
    x = torch.randn(2, 1, HEADS * HEAD_DIM).to(dtype)
    cache = random_cache(dtype, batch=2)
    ref_cache = tuple(t.clone() for t in cache)
    c, s = cos[23:24][None, None], sin[23:24][None, None]
    with torch.inference_mode():
        got = step.forward(x, cache, 23, c, s)
        ref = llama_math.layer_forward(plain, x, c, s, ref_cache, 23)
        wrong = llama_math.layer_forward(plain, x, cos[22:23][None, None], sin[22:23][None, None],
                                         tuple(t.clone() for t in cache), 23)
    tolerance = (2e-5 if dtype == torch.float32 else 0.02) * float((ref.float() - x.float()).abs().max())
    assert float((got - ref).float().abs().max()) <= tolerance
    assert float((wrong - ref).float().abs().max()) > 5 * tolerance
    assert all(torch.equal(a[:, :, :24], b[:, :, :24]) for a, b in zip(cache, ref_cache))


def test_without_kernels_every_step_is_aten():
    llm = random_llama(torch.float32)
    steps = choose_steps(list(llm.model.layers), llm.model.norm, "silu", torch.float32, HEADS, KV_HEADS, HEAD_DIM,
                         None)
    assert [type(s) for s in steps] == [AtenStep, AtenStep]


def test_steps_fall_back_to_aten(our_kernels):
    """A non-SiLU MLP, or one layer that does not qualify for the fp32 step: every layer aten."""
    llm = random_llama(torch.float32)
    args = (list(llm.model.layers), llm.model.norm)
    shape = (HEADS, KV_HEADS, HEAD_DIM)
    assert [type(s) for s in choose_steps(*args, "gelu", torch.float32, *shape, our_kernels)] == [AtenStep] * 2
    llm.model.layers[1].mlp.up_proj.bias = torch.nn.Parameter(torch.zeros(384))
    assert [type(s) for s in choose_steps(*args, "silu", torch.float32, *shape, our_kernels)] == [AtenStep] * 2
