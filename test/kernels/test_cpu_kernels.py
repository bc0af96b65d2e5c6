"""Our compiled CPU kernels (vila_ros/kernels) against aten, built for real on this machine."""
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from vila_ros import kernels


@pytest.fixture
def compiled(our_kernels):
    return our_kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(32, 32, 80), (8, 2, 72), (4, 4, 256), (2, 1, 16)])
@pytest.mark.parametrize("length", [1, 37, 300])
def test_decode_attention_equals_sdpa(compiled, dtype, heads, kv_heads, head_dim, length):
    gen = torch.Generator().manual_seed(length + heads)
    capacity = 320  # longer than length: positions past it hold garbage that must not be read
    k = torch.randn(2, kv_heads, capacity, head_dim, generator=gen).to(dtype)
    v = torch.randn(2, kv_heads, capacity, head_dim, generator=gen).to(dtype)
    k[:, :, length:] = float("nan")
    q = torch.randn(2, heads, 1, head_dim, generator=gen).to(dtype)
    got = compiled.decode_attention(q, k, v, length, head_dim ** -0.5)
    ref = F.scaled_dot_product_attention(q.float(), k[:, :, :length].float(), v[:, :, :length].float(),
                                         enable_gqa=heads != kv_heads)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.allclose(got, ref, atol=2e-5, rtol=1e-4), (got - ref).abs().max()


@pytest.mark.parametrize("rows,n,k", [(1, 6, 100), (3, 64, 2560), (2, 1031, 96)])
def test_bf16_gemv_equals_an_fp32_matmul_of_the_same_numbers(compiled, rows, n, k):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
    w = torch.randn(n, k, generator=gen).to(torch.bfloat16)
    got = compiled.bf16_gemv(x, w)
    ref = x.float() @ w.float().t()
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-4 * k ** 0.5, rtol=1e-5)


@pytest.mark.parametrize("group", [32, 64, 128, 256])
@pytest.mark.parametrize("rows", [1, 3])
def test_int4_gemv_equals_an_fp32_matmul_of_the_dequantized_weights(compiled, group, rows):
    """Tight enough to catch a scale or zero off by one bf16 step (0.4%), which the module-level tests' tolerance
    for tinygemm's bf16 rounding would let through."""
    from vila_ros.model.int4 import Int4Linear, quantize_weight

    gen = torch.Generator().manual_seed(group + rows)
    n, k = 64, 512
    q, scales, zeros = quantize_weight(torch.randn(n, k, generator=gen), group)
    lin = Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, group)
    ref_w = lin.dequantized()
    lin.prepare()
    assert lin.kernel == "vila_ros"
    x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
    got = compiled.w4a16_gemv(x, *lin._gemv, group)
    ref = x.float() @ ref_w.t()
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max())), (got - ref).abs().max()
    assert torch.equal(compiled.w4a16_gemv(x, *lin._gemv, group, True), got.to(torch.bfloat16))


def _int4_module(gen, n, k, group):
    from vila_ros.model.int4 import Int4Linear, quantize_weight

    q, scales, zeros = quantize_weight(torch.randn(n, k, generator=gen), group)
    lin = Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, group)
    ref_w = lin.dequantized()
    return lin.prepare(), ref_w


@pytest.mark.parametrize("case", ["outlier", "tiny", "mixed_scales", "zeros"])
def test_int4_gemv_keeps_16_bit_activations_exact_enough(compiled, case):
    """The GEMV runs activations as 16-bit fixed point per group: an outlier 4000x the rest of its group, groups of
    1e-30-sized values and groups of very different magnitudes must all come out as an fp32 matmul does."""
    gen = torch.Generator().manual_seed(7)
    n, k, group = 64, 1024, 128
    lin, ref_w = _int4_module(gen, n, k, group)
    x = torch.randn(2, k, generator=gen)
    if case == "outlier":
        x[:, 5] = 4000.0
    elif case == "tiny":
        x = x * 1e-30
    elif case == "mixed_scales":
        x = x * torch.logspace(-20, 20, k // group).repeat_interleave(group)
    else:
        x[:, :group] = 0.0
    x = x.to(torch.bfloat16)
    got = compiled.w4a16_gemv(x, *lin._gemv, group)
    # each group's terms separately, so that a group 1e20x smaller than another is still checked
    for g in range(k // group):
        cols = slice(g * group, (g + 1) * group)
        part = x[:, cols].float() @ ref_w[:, cols].t()
        x_g = x.clone()
        x_g[:, :cols.start], x_g[:, cols.stop:] = 0, 0
        got_g = compiled.w4a16_gemv(x_g, *lin._gemv, group)
        scale = float(part.abs().max()) or 1.0
        assert torch.allclose(got_g, part, rtol=1e-4, atol=1e-4 * scale), (case, g, (got_g - part).abs().max())
    ref = x.float() @ ref_w.t()
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max())), (case, (got - ref).abs().max())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_int4_gemv_propagates_a_non_finite_activation(compiled, bad):
    """The engine detects a broken model by NaN/inf logits: fixed-point activations must not swallow them."""
    gen = torch.Generator().manual_seed(3)
    lin, _ = _int4_module(gen, 32, 512, 128)
    x = torch.randn(2, 512, generator=gen).to(torch.bfloat16)
    x[0, 300] = bad
    got = compiled.w4a16_gemv(x, *lin._gemv, 128)
    assert torch.isnan(got[0]).all()
    assert torch.isfinite(got[1]).all()


def test_kernels_flush_denormals_but_give_the_caller_its_mode_back(compiled):
    """Inside, denormals are flushed (they cost ~100 cycles an instruction); outside, torch's own math must keep
    them exactly as before the call."""
    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39])  # below fp32's normal range
    g = torch.tensor([[-90.0, -95.0, 1.0, 100.0]]).to(torch.bfloat16)
    compiled.silu_mul_bf16(g, torch.ones_like(g))
    compiled.rms_norm_bf16(torch.randn(1, 64).to(torch.bfloat16), torch.ones(64, dtype=torch.bfloat16), 1e-5)
    assert float((tiny * 1.0)[0]) == pytest.approx(1e-39, rel=1e-6)
    # a softmax whose weights fall far below the normal range is still right
    q = torch.zeros(1, 1, 1, 16)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 8, 16)
    k[0, 0, :, 0] = torch.tensor([0.0, -100.0, -200.0, -300.0, -90.0, -87.5, -50.0, 10.0])
    v = torch.randn(1, 1, 8, 16)
    got = compiled.decode_attention(q, k, v, 8, 1.0)
    ref = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert torch.allclose(got, ref, atol=1e-6, rtol=1e-5)


def test_bad_arguments_are_clear_errors(compiled):
    k = torch.zeros(1, 2, 8, 16)
    with pytest.raises(RuntimeError, match="length 9 outside"):
        compiled.decode_attention(torch.zeros(1, 2, 1, 16), k, k, 9, 0.25)
    with pytest.raises(RuntimeError, match="both be fp32 or both bf16"):
        compiled.decode_attention(torch.zeros(1, 2, 1, 16), k, k.to(torch.bfloat16), 4, 0.25)
    with pytest.raises(RuntimeError, match="disagree"):
        compiled.decode_attention(torch.zeros(1, 3, 1, 16), k, k, 4, 0.25)
    with pytest.raises(RuntimeError, match="with x's K"):
        compiled.bf16_gemv(torch.zeros(1, 64, dtype=torch.bfloat16), torch.zeros(4, 32, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="multiple of 128"):
        compiled.w4a16_gemv(torch.zeros(1, 100, dtype=torch.bfloat16), torch.zeros(4, 50, dtype=torch.uint8),
                            torch.zeros(4, 1), torch.zeros(4, 1), 100)


def test_the_switch(monkeypatch):
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "off")
    assert kernels.cpu_kernels() is None and kernels.unavailable_reason() == "VILA_ROS_CPU_KERNELS=off"
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "fast please")
    with pytest.raises(ValueError, match="expected auto, off or require"):
        kernels.cpu_kernels()


# The one-token layer steps reproduce HF Llama's bf16 math, rounding points included: compared with the very aten
# ops our decoder's general path runs (HF's own modules where they exist).

@pytest.mark.parametrize("rows,hidden", [(1, 2560), (3, 100)])
def test_rms_norm_bf16_equals_llama_rms_norm(compiled, rows, hidden):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = torch.Generator().manual_seed(hidden)
    norm = LlamaRMSNorm(hidden, eps=1e-5).to(torch.bfloat16)
    norm.weight.data = (torch.randn(hidden, generator=gen) * 0.3 + 1).to(torch.bfloat16)
    x = (torch.randn(rows, 1, hidden, generator=gen) * 4).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(compiled.rms_norm_bf16(x, norm.weight, 1e-5), norm(x))


@pytest.mark.parametrize("n", [6912, 37])
def test_silu_mul_bf16_equals_aten(compiled, n):
    gen = torch.Generator().manual_seed(n)
    gate_up = (torch.randn(1, 1, 2 * n, generator=gen) * 6).to(torch.bfloat16)
    gate_up[0, 0, :4] = torch.tensor([0.0, -0.0, 90.0, -90.0])  # zero and saturated ends of the sigmoid
    gate, up = gate_up.split([n, n], dim=-1)
    got = compiled.silu_mul_bf16(gate, up)
    assert got.shape == (1, 1, n) and torch.equal(got, F.silu(gate) * up)


@pytest.mark.parametrize("heads,kv_heads,head_dim,position", [(32, 32, 80, 0), (8, 2, 72, 137), (4, 1, 16, 299)])
def test_rope_cache_attention_equals_the_aten_steps(compiled, heads, kv_heads, head_dim, position):
    from vila_ros.model.llama_math import apply_rope

    gen = torch.Generator().manual_seed(position + heads)
    capacity = 300
    q, k, v = (torch.randn(1, 1, h * head_dim, generator=gen).to(torch.bfloat16) for h in (heads, kv_heads, kv_heads))
    k_cache, v_cache = (torch.randn(1, kv_heads, capacity, head_dim, generator=gen).to(torch.bfloat16)
                        for _ in range(2))
    k_cache[:, :, position + 1:] = float("nan")  # past the new token: never read
    angles = position / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.cat([angles, angles])
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()

    def heads_first(t, h):
        return t.view(1, 1, h, head_dim).transpose(1, 2)

    qh, kh = heads_first(q, heads), heads_first(k, kv_heads)
    qh, kh = apply_rope(qh, cos, sin), apply_rope(kh, cos, sin)
    ref_k[:, :, position:position + 1], ref_v[:, :, position:position + 1] = kh, heads_first(v, kv_heads)
    ref = F.scaled_dot_product_attention(qh.float(), ref_k[:, :, :position + 1].float(),
                                         ref_v[:, :, :position + 1].float(), enable_gqa=heads != kv_heads)
    ref = ref.to(torch.bfloat16).transpose(1, 2).reshape(1, 1, heads * head_dim)
    got = compiled.rope_cache_attention(q, k, v, cos, sin, k_cache, v_cache, position, head_dim ** -0.5)
    assert torch.equal(k_cache[:, :, :position + 1], ref_k[:, :, :position + 1])
    assert torch.equal(v_cache, ref_v)
    # fp32 sums in another order: at most one bf16 step apart
    assert got.shape == ref.shape and torch.allclose(got.float(), ref.float(), rtol=8e-3, atol=1e-5)


def test_layer_step_arguments_are_checked(compiled):
    cache = torch.zeros(1, 2, 8, 16, dtype=torch.bfloat16)
    row = torch.zeros(32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="position 8 outside"):
        compiled.rope_cache_attention(row, row, row, row[:16], row[:16], cache, cache, 8, 0.25)
    with pytest.raises(RuntimeError, match="contiguous bf16"):
        compiled.rope_cache_attention(row.float(), row, row, row[:16], row[:16], cache, cache, 0, 0.25)
    with pytest.raises(RuntimeError, match="one shape"):
        compiled.silu_mul_bf16(row, row[:16])
    with pytest.raises(RuntimeError, match="weight: contiguous bf16"):
        compiled.rms_norm_bf16(row, row[:16], 1e-6)


def test_kernels_let_other_python_threads_run_meanwhile(compiled):
    """The GIL is released inside a kernel: a Python thread keeps ticking through a long GEMV instead of waiting for
    it to end (the node's camera callbacks run beside decoding)."""
    x = torch.randn(32, 4096).to(torch.bfloat16)
    w = torch.randn(4096, 4096).to(torch.bfloat16)
    ticks: list[float] = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernel on one core, the ticking thread on the other
    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.01)
        start = time.perf_counter()
        compiled.bf16_gemv(x, w)
        end = time.perf_counter()
    finally:
        stop.set()
        ticker.join()
        torch.set_num_threads(threads)
    during = [t for t in ticks if start <= t <= end]
    longest_gap = max(b - a for a, b in zip([start, *during], [*during, end]))
    assert end - start > 0.02, "the GEMV must outlast a GIL switch interval for this test to mean anything"
    assert longest_gap < 0.3 * (end - start), (longest_gap, end - start, len(during))
