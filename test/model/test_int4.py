"""int4 group quantization math, the nibble packing and Int4Linear against a dequantized bf16 matmul, on both
CPU kernels: aten's tinygemm and ours (vila_ros/kernels; skipped only where this CPU cannot run it)."""
import pytest
import torch

from vila_ros.model.int4 import (
    Int4Linear,
    dequantize_weight,
    fake_quantize,
    pack_nibbles,
    quantize_weight,
    unpack_nibbles,
)


@pytest.mark.parametrize("scheme", ["asym", "sym"])
@pytest.mark.parametrize("shape,group", [((32, 128), 32), ((48, 200), 64), ((16, 96), 64)])
def test_quantize_error_bounded_by_half_step(scheme, shape, group):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.05
    q, scales, zeros = quantize_weight(w, group, scheme)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    assert scales.shape == zeros.shape == (shape[0], -(-shape[1] // group))
    if scheme == "sym":
        assert bool((zeros == 8).all())
    err = (dequantize_weight(q, scales, zeros, group) - w).abs()
    step = scales.repeat_interleave(group, dim=1)[:, : shape[1]]
    assert bool((err <= step * 0.5 + 1e-6).all())  # every value within half a step: nothing clipped


def test_short_last_group_uses_its_own_range():
    w = torch.zeros(16, 80)
    w[:, 64:] = torch.linspace(-1, 1, 16)  # the short last group (16 columns) holds all the range
    q, scales, zeros = quantize_weight(w, 64)
    assert float(scales[:, 0].max()) < 1e-6 and float(scales[:, 1].min()) > 0.1
    assert torch.allclose(dequantize_weight(q, scales, zeros, 64), w, atol=float(scales.max()) / 2 + 1e-6)


def test_pack_roundtrip_and_nibble_order():
    q = torch.randint(0, 16, (8, 13), dtype=torch.uint8)
    packed = pack_nibbles(q)
    assert packed.shape == (8, 7) and packed.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(packed, 13), q)
    assert int(packed[0, 0]) == int(q[0, 0]) | (int(q[0, 1]) << 4)  # column 2c low, 2c+1 high


def test_clip_shrinks_range():
    w = torch.randn(8, 64)
    q1, s1, _ = quantize_weight(w, 32)
    q2, s2, _ = quantize_weight(w, 32, clip=torch.full((8, 2), 0.5))
    assert torch.allclose(s2, s1 * 0.5, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 15, 70])  # decode GEMV up to 64 rows, dequantized tiles + GEMM above
@pytest.mark.parametrize("n,k,group", [(64, 128, 32), (40, 200, 64), (256, 688, 128), (32, 64, 128),
                                       (1030, 256, 256)])
def test_int4_linear_matches_dequantized_bf16_matmul(n, k, group, rows, kernel):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(n, k, generator=gen) * 0.05
    q, scales, zeros = quantize_weight(w, group)
    lin = Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, group)
    ref_w = lin.dequantized()  # from the stored (bf16) scales
    x = torch.randn(rows, 1, k, generator=gen).to(torch.bfloat16)
    y = lin.prepare()(x)
    assert lin.kernel == kernel
    assert y.shape == (rows, 1, n) and y.dtype == torch.bfloat16
    ref = x.float() @ ref_w.t()
    # tinygemm keeps bf16 scale/zero products and a bf16 result: bf16 rounding of the output and of the zeros
    assert float((y.float() - ref).abs().max()) <= 0.02 * float(ref.abs().max()) + 1e-3
    assert lin.qweight.numel() == 0  # prepare() freed the storage copy
    y32 = lin(x.float())
    assert y32.dtype == torch.float32 and torch.equal(y32.to(torch.bfloat16), y)  # only the output rounding differs


def test_fake_quantize_equals_int4_linear_weights():
    w = torch.randn(32, 64) * 0.1
    q, scales, zeros = quantize_weight(w, 32)
    lin = Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, 32)
    assert torch.allclose(fake_quantize(w, 32), lin.dequantized(), atol=1e-6)


def test_unsupported_kernel_group_is_a_clear_error():
    q, s, z = quantize_weight(torch.randn(16, 64), 16)
    with pytest.raises(ValueError, match="no int4 kernel"):
        Int4Linear.from_quantized(q, s, z, 16).prepare()
    with pytest.raises(ValueError, match="scheme"):
        quantize_weight(torch.randn(16, 64), 32, scheme="nf4")


def _weight_storage(module):
    return (module._gemv[0] if module.kernel == "vila_ros" else module._packed).untyped_storage().data_ptr()


def _prepared(n, k, group, seed):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05
    q, scales, zeros = quantize_weight(w, group)
    return Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, group).prepare()


def test_fused_int4_linear_equals_its_parts_concatenated(kernel):
    parts = [_prepared(n, 256, 64, seed) for seed, n in enumerate((128, 64, 192))]
    x = torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16)
    separate = torch.cat([p(x) for p in parts], -1)
    fused = Int4Linear.fused(parts)
    assert fused is not None and fused.out_features == 384
    assert torch.equal(fused(x), separate)
    # the parts now view the fused storage and still compute what they did
    assert torch.equal(torch.cat([p(x) for p in parts], -1), separate)
    assert fused.kernel == kernel and all(_weight_storage(p) == _weight_storage(fused) for p in parts)


def test_parts_that_end_mid_block_are_not_fused(kernel):
    # aten's CPU packing interleaves rows in blocks of 64, ours in blocks of 4: a part ending mid-block would
    # scramble its neighbour's rows
    ragged = 40 if kernel == "tinygemm" else 42
    assert Int4Linear.fused([_prepared(ragged, 128, 64, 0), _prepared(64, 128, 64, 1)]) is None
    assert Int4Linear.fused([_prepared(64, 128, 64, 0), _prepared(64, 256, 64, 1)]) is None  # other in_features


def test_a_prepared_module_keeps_its_kernel_when_the_switch_changes(kernel, monkeypatch):
    # The layout is fixed at prepare(): switching our kernels off afterwards must not strand a module in it.
    q, scales, zeros = quantize_weight(torch.randn(64, 256, generator=torch.Generator().manual_seed(3)) * 0.05, 64)
    lin = Int4Linear.from_quantized(q, scales.to(torch.bfloat16), zeros, 64).prepare()
    x = torch.randn(2, 256, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    before = lin(x)
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "off")
    assert lin.kernel == kernel and torch.equal(lin(x), before)
