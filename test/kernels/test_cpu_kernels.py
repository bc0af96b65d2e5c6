"""Our compiled CPU kernels (vila_ros/kernels) against aten, built for real on this machine."""
import pytest
import torch
import torch.nn.functional as F

from vila_ros import kernels


@pytest.fixture
def compiled(monkeypatch):
    missing = kernels._missing_requirement()
    if missing:
        pytest.skip(f"our CPU kernels cannot run here: {missing}")
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "require")  # a failed build fails the test
    return kernels.cpu_kernels()


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
