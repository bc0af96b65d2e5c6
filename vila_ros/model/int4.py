"""int4 group quantization: the math, the on-disk packing and ``Int4Linear`` (the module the engine runs).

Quantization of a weight W [out, in] in groups of ``group`` consecutive input columns (group j covers columns
[j*group, min((j+1)*group, in)): the last group may be shorter when ``group`` does not divide ``in``):

    asym (default):  scale = (max - min) / 15,  zero = clamp(round(-min / scale), 0, 15)   (an integer)
    sym:             scale = max|w| / 7,        zero = 8
    q = clamp(round(w / scale) + zero, 0, 15),  w ~= (q - zero) * scale

On disk (docs: vila_ros/model/int4_checkpoint.py): ``qweight`` uint8 [out, ceil(in/2)] with column 2c in the low nibble
and 2c+1 in the high nibble of byte c, ``scales`` bf16 [out, groups], ``zeros`` uint8 [out, groups].

Kernels: on x86 CPUs with AVX-512 BF16 and VNNI, our own (``vila_ros/kernels``): a GEMV for decode (int16
fixed-point activations, integer dot products per group; 3b shapes, 2 threads: 1.1-1.2x a GEMV in bf16 arithmetic,
which is ~1.6x aten's tinygemm per matrix, with its weights on huge pages another 1.3x) and, for prefill, dequantization
to bf16 tiles fed to a bf16 GEMM (2.2x aten's at 600 rows). Elsewhere tinygemm
(``aten._weight_int4pack_mm_for_cpu`` / ``aten._weight_int4pack_mm`` on CUDA) computes ``w = (q - 8) * scale +
zero_f`` with a float zero per group, so ``zero_f = (8 - zero) * scale``. It needs bf16 activations (the CPU kernel
is only fast with bf16), ``out % 16 == 0`` and ``in % group == 0`` with group in 32/64/128/256: ``Int4Linear``
pads rows/columns with zero weights where needed and slices the result.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from vila_ros.kernels import huge_pages

KERNEL_GROUP_SIZES = (32, 64, 128, 256)
SCHEMES = ("asym", "sym")


def num_groups(in_features: int, group: int) -> int:
    return math.ceil(in_features / group)


def _grouped(w: torch.Tensor, group: int) -> tuple[torch.Tensor, int]:
    """[out, in] -> [out, groups, group] (the last group zero-padded) and the padding."""
    out, k = w.shape
    pad = num_groups(k, group) * group - k
    if pad:
        w = F.pad(w, (0, pad))
    return w.reshape(out, -1, group), pad


def quantize_weight(
    w: torch.Tensor, group: int, scheme: str = "asym", clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float W [out, in] -> (q uint8 [out, in] in 0..15, scales fp32 [out, groups], zeros uint8 [out, groups]).

    ``clip``: optional [out, groups] ratios in (0, 1] shrinking each group's range (AWQ's clipping search).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    out, k = w.shape
    wg, pad = _grouped(w.float(), group)
    if pad:  # the padded tail of the last group must not widen its range: reuse a real value of the row
        last = wg[:, -1, : group - pad]
        wg[:, -1, group - pad:] = last[:, :1]
    if scheme == "asym":
        wmax = wg.amax(dim=2).clamp_min(0)
        wmin = wg.amin(dim=2).clamp_max(0)
        if clip is not None:
            wmax, wmin = wmax * clip, wmin * clip
        scales = ((wmax - wmin) / 15).clamp_min(1e-8)
        zeros = torch.clamp(torch.round(-wmin / scales), 0, 15)
    else:
        amax = wg.abs().amax(dim=2)
        if clip is not None:
            amax = amax * clip
        scales = (amax / 7).clamp_min(1e-8)
        zeros = torch.full_like(scales, 8.0)
    q = torch.clamp(torch.round(wg / scales[..., None]) + zeros[..., None], 0, 15)
    q = q.reshape(out, -1)[:, :k]
    return q.to(torch.uint8), scales, zeros.to(torch.uint8)


def dequantize_weight(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> torch.Tensor:
    """(q [out, in], scales [out, groups], zeros [out, groups]) -> fp32 W [out, in]."""
    k = q.shape[1]
    s = scales.float().repeat_interleave(group, dim=1)[:, :k]
    z = zeros.float().repeat_interleave(group, dim=1)[:, :k]
    return (q.float() - z) * s


def fake_quantize(w: torch.Tensor, group: int, scheme: str = "asym", clip: torch.Tensor | None = None,
                  scale_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """W -> dequantize(quantize(W)) in W's dtype, with scales rounded to their storage dtype (what runs)."""
    q, scales, zeros = quantize_weight(w, group, scheme, clip)
    return dequantize_weight(q, scales.to(scale_dtype), zeros, group).to(w.dtype)


def _cpu_kernels():
    from vila_ros.kernels import cpu_kernels

    return cpu_kernels()


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """uint8 [out, in] values 0..15 -> uint8 [out, ceil(in/2)]: column 2c low nibble, 2c+1 high nibble."""
    if q.shape[1] % 2:
        q = F.pad(q, (0, 1))
    q = q.to(torch.uint8)
    return (q[:, 0::2] & 0xF) | ((q[:, 1::2] & 0xF) << 4)


def unpack_nibbles(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of pack_nibbles: uint8 [out, ceil(in/2)] -> uint8 [out, in]."""
    low = packed & 0xF
    high = packed >> 4
    return torch.stack([low, high], dim=2).reshape(packed.shape[0], -1)[:, :in_features]


# aten's CPU int4 packing interleaves weight rows in blocks of this many (found by test: concatenating parts whose
# row counts are not multiples of it gives wrong outputs).
CPU_PACK_BLOCK_N = 64
# Our CPU kernels (layout: w4_pack in vila_ros/kernels/cpu_kernels.cpp): rows in blocks of 4, columns in blocks of
# 128; above this many activation rows, dequantizing to bf16 tiles + GEMM beats converting every weight once per row.
GEMV_ROW_BLOCK, GEMV_COLUMN_BLOCK, GEMV_MAX_ROWS = 4, 128, 64
DEQUANT_TILE_ROWS = 1024


_dequant_scratch = threading.local()


def _scratch(numel: int) -> torch.Tensor:
    """A per-thread bf16 buffer reused across calls (a fresh 10+ MB tensor per layer costs its page faults)."""
    buffer = getattr(_dequant_scratch, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = _dequant_scratch.buffer = torch.empty(numel, dtype=torch.bfloat16)
    return buffer[:numel]


class Int4Linear(nn.Module):
    """A bias-free Linear with int4 weights. Holds the storage format (buffers ``qweight``, ``scales``,
    ``zeros``, loaded like any state dict) until ``prepare()`` converts it to the kernel layout of its device.

    Forward runs bf16 activations through tinygemm (CPU: ``_weight_int4pack_mm_for_cpu``; CUDA:
    ``_weight_int4pack_mm``, untested here) and returns the input's dtype.
    """

    def __init__(self, in_features: int, out_features: int, group_size: int, device=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        groups = num_groups(in_features, group_size)
        kw = dict(device=device)
        self.register_buffer("qweight", torch.empty(out_features, (in_features + 1) // 2, dtype=torch.uint8, **kw))
        self.register_buffer("scales", torch.empty(out_features, groups, dtype=torch.bfloat16, **kw))
        self.register_buffer("zeros", torch.empty(out_features, groups, dtype=torch.uint8, **kw))
        self._packed: torch.Tensor | None = None
        self._scale_zeros: torch.Tensor | None = None
        self._kernel_group = group_size
        self._k_pad = in_features
        self._n_pad = out_features
        self._gemv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # weight, scales, zeros
        self._kernels = None  # the compiled module the _gemv layout was made for (kept: the layout needs it)
        self._unpadded_gemv = False  # our layout without padded rows or columns: the decode fast path

    @classmethod
    def from_quantized(cls, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> "Int4Linear":
        out, k = q.shape
        mod = cls(k, out, group, device=q.device)
        mod.qweight.copy_(pack_nibbles(q))
        mod.scales.copy_(scales.to(torch.bfloat16))
        mod.zeros.copy_(zeros)
        return mod

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"

    def dequantized(self) -> torch.Tensor:
        """fp32 [out, in] weight this module computes with (from the storage buffers)."""
        q = unpack_nibbles(self.qweight, self.in_features)
        return dequantize_weight(q, self.scales, self.zeros, self.group_size)

    @property
    def prepared(self) -> bool:
        return self._packed is not None or self._gemv is not None

    @property
    def kernel(self) -> str:
        """Which kernel forward runs: "vila_ros" (our CPU kernels), "tinygemm", or "" before prepare()."""
        return "vila_ros" if self._gemv is not None else "tinygemm" if self._packed is not None else ""

    @torch.no_grad()
    def prepare(self, keep_storage: bool = False) -> "Int4Linear":
        """Convert the storage buffers to the kernel layout of their device (once)."""
        if self.prepared:
            return self
        device = self.qweight.device
        g = self.group_size
        if g not in KERNEL_GROUP_SIZES:
            raise ValueError(f"group size {g} has no int4 kernel (supported: {KERNEL_GROUP_SIZES})")
        kernels = _cpu_kernels() if device.type == "cpu" else None
        if kernels is not None:
            self._prepare_gemv(kernels, keep_storage)
            return self
        k, n = self.in_features, self.out_features
        groups = num_groups(k, g)
        inner_k_tiles = 2 if device.type == "cuda" else 1
        k_mult = max(g, 16 * inner_k_tiles * 2) if device.type == "cuda" else g
        k_pad = math.ceil(groups * g / k_mult) * k_mult
        n_pad = math.ceil(n / 16) * 16
        q = unpack_nibbles(self.qweight, k).to(torch.int32)
        q = F.pad(q, (0, k_pad - k, 0, n_pad - n), value=8)  # padded weights are (8 - 8) * s = 0
        scales = F.pad(self.scales.float(), (0, k_pad // g - groups, 0, n_pad - n))
        zeros = F.pad(self.zeros.float(), (0, k_pad // g - groups, 0, n_pad - n), value=8)
        zero_f = (8.0 - zeros) * scales
        self._scale_zeros = torch.stack([scales, zero_f], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        if device.type == "cuda":
            u8 = ((q[:, 0::2] << 4) | q[:, 1::2]).to(torch.uint8)
            self._packed = torch.ops.aten._convert_weight_to_int4pack(u8.contiguous(), inner_k_tiles)
        else:
            self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), inner_k_tiles)
        self._kernel_group, self._k_pad, self._n_pad = g, k_pad, n_pad
        if not keep_storage:
            self._free_storage()
        return self

    def _prepare_gemv(self, kernels, keep_storage: bool) -> None:
        g, k, n = self.group_size, self.in_features, self.out_features
        k_pad = math.ceil(k / max(g, GEMV_COLUMN_BLOCK)) * max(g, GEMV_COLUMN_BLOCK)
        n_pad = math.ceil(n / GEMV_ROW_BLOCK) * GEMV_ROW_BLOCK
        groups = num_groups(k, g)
        scales = F.pad(self.scales, (0, k_pad // g - groups, 0, n_pad - n))  # padded weights: scale 0
        zeros = F.pad(self.zeros, (0, k_pad // g - groups, 0, n_pad - n), value=8)
        packed = huge_pages.empty((n_pad // GEMV_ROW_BLOCK, k_pad // GEMV_COLUMN_BLOCK * GEMV_ROW_BLOCK * 64),
                                  torch.uint8)
        kernels.w4_pack(self.qweight.contiguous(), k, n_pad, k_pad, packed)
        self._gemv = (packed, scales.to(torch.bfloat16).contiguous(), zeros.contiguous())
        self._kernels = kernels
        self._kernel_group, self._k_pad, self._n_pad = g, k_pad, n_pad
        self._unpadded_gemv = (k_pad, n_pad) == (k, n)
        if not keep_storage:
            self._free_storage()

    def _free_storage(self) -> None:
        """The kernel copy is all forward needs: free the storage format."""
        for name in ("qweight", "scales", "zeros"):
            buffer = self._buffers[name]
            self._buffers[name] = torch.empty(0, dtype=buffer.dtype, device=buffer.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dtype == torch.bfloat16 and self._unpadded_gemv
                and x.numel() <= GEMV_MAX_ROWS * self.in_features):
            # a bf16 model's decode step: one kernel call with a bf16 result (a 3b token makes 128 of these)
            x2 = x.reshape(-1, self.in_features).contiguous()
            y = self._kernels.w4a16_gemv(x2, *self._gemv, self._kernel_group, True)
            return y.view(*x.shape[:-1], self.out_features)
        if not self.prepared:
            self.prepare(keep_storage=True)
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if self._k_pad != self.in_features:
            x2 = F.pad(x2, (0, self._k_pad - self.in_features))
        x2 = x2.contiguous()
        if self._gemv is not None:
            y = self._forward_vila_ros(x2)
        elif x2.device.type == "cuda":
            y = torch.ops.aten._weight_int4pack_mm(x2, self._packed, self._kernel_group, self._scale_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self._packed, self._kernel_group, self._scale_zeros)
        if self._n_pad != self.out_features:
            y = y[:, : self.out_features]
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def _forward_vila_ros(self, x2: torch.Tensor) -> torch.Tensor:
        kernels = self._kernels
        weight, scales, zeros = self._gemv
        if x2.shape[0] <= GEMV_MAX_ROWS:
            return kernels.w4a16_gemv(x2, weight, scales, zeros, self._kernel_group)
        y = torch.empty(x2.shape[0], self._n_pad, dtype=torch.bfloat16)
        tile = _scratch(min(DEQUANT_TILE_ROWS, self._n_pad) * self._k_pad).view(-1, self._k_pad)
        for start in range(0, self._n_pad, DEQUANT_TILE_ROWS):
            rows = min(DEQUANT_TILE_ROWS, self._n_pad - start)
            kernels.w4_dequantize(weight, scales, zeros, self._k_pad, self._kernel_group, start, rows, tile)
            y[:, start:start + rows] = x2 @ tile[:rows].t()
        return y

    @classmethod
    def fused(cls, parts: list["Int4Linear"]) -> "Int4Linear | None":
        """One prepared CPU module computing ``torch.cat([p(x) for p in parts], -1)`` in a single kernel call
        (q/k/v, gate/up: fewer, larger calls keep both cores streaming weights), or None when the parts do not
        share a layout. The parts keep working: their packed weights become views of the fused tensor (no copy
        stays resident).
        """
        first = parts[0]
        if not all(isinstance(p, Int4Linear) and p.prepared and p.kernel == first.kernel for p in parts):
            return None
        row_block = GEMV_ROW_BLOCK if first.kernel == "vila_ros" else CPU_PACK_BLOCK_N
        if first.kernel == "tinygemm" and first._packed.device.type != "cpu":
            return None
        if any(p._kernel_group != first._kernel_group or p._k_pad != first._k_pad or p.in_features !=
               first.in_features or p.out_features % row_block for p in parts):
            return None  # the kernels pack rows in blocks: a part ending mid-block would scramble the next
        out = sum(p.out_features for p in parts)
        fused = cls(first.in_features, out, first.group_size, device=first.qweight.device)
        for name in ("qweight", "scales", "zeros"):  # kernel layout only, like a prepared module
            fused._buffers[name] = torch.empty(0, dtype=fused._buffers[name].dtype)
        fused._kernel_group, fused._k_pad, fused._n_pad = first._kernel_group, first._k_pad, out
        start = 0
        if first.kernel == "vila_ros":
            weights = [p._gemv[0] for p in parts]  # streamed every token: on huge pages like each part's
            weight = huge_pages.empty((sum(w.shape[0] for w in weights), weights[0].shape[1]), torch.uint8)
            fused._gemv = (torch.cat(weights, 0, out=weight),
                           *(torch.cat([p._gemv[i] for p in parts], 0) for i in (1, 2)))
            fused._kernels = first._kernels
            fused._unpadded_gemv = (fused._k_pad, fused._n_pad) == (fused.in_features, fused.out_features)
            weight, scales, zeros = fused._gemv
            for p in parts:
                end = start + p.out_features
                p._gemv = (weight[start // row_block:end // row_block], scales[start:end], zeros[start:end])
                start = end
            return fused
        fused._packed = torch.cat([p._packed for p in parts], 0)
        fused._scale_zeros = torch.cat([p._scale_zeros for p in parts], 1)
        for p in parts:
            p._packed = fused._packed[start:start + p.out_features]
            start += p.out_features
        return fused

    def unpadded_gemv_operands(self) -> tuple[list[torch.Tensor], int] | None:
        """([weight, scales, zeros], group) as our kernels' w4a16_gemv takes them, for callers that run whole layer
        steps in one kernel call; None unless prepared in that layout without padding."""
        return (list(self._gemv), self._kernel_group) if self._unpadded_gemv else None

    def resident_bytes(self) -> int:
        tensors = [self._packed, self._scale_zeros] if self._packed is not None else []
        tensors += list(self._gemv) if self._gemv is not None else []
        tensors += [b for b in self._buffers.values() if b is not None]
        return sum(t.numel() * t.element_size() for t in tensors)
