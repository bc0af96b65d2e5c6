// CPU kernels for decode (AVX-512 BF16 and VNNI), compiled on first use by vila_ros/kernels/__init__.py.
//
// 1. int4-weight x bf16-activation matrix-vector products (a few rows of activations), the repacking into their
//    layout, and the same weights dequantized to bf16 tiles for prefill.
// 2. bf16 matrix-vector products in torch's Linear layout.
// 3. Attention of one new token over a bf16 or fp32 KV cache.
// 4. The small steps of a bf16 layer's one-token step (RMSNorm, RoPE + cache write + attention, SiLU * up).
// 5. Whole one-token layer steps: a bf16 layer with int4 projections, an fp32 layer with fp32 projections.
//
// Why not aten's tinygemm: on decode it spends its time unpacking nibbles. Why not vdpbf16ps either (a nibble
// becomes the bf16 128 + q in one vpternlogd): on the Xeon of our benchmarks one vdpbf16ps zmm issues every
// 2.2 cycles, vpdpwssd (int16 pairs into int32) every 0.58, so bf16 dot products held the GEMV to ~29 GB/s in L2
// on 2 threads, below the ~28-55 GB/s that machine's memory delivers. Here the activations become
// 16-bit fixed point per weight group, x_k = t_g X_k (t_g a power of two that fits the group's largest |x| in int16:
// a bf16 x whose exponent is at most 7 below the largest's is exact, smaller ones round at 2^-16 of the group's
// range),
// and the nibbles are int16 operands of vpdpwssd, exact integer dot products per group:
//     y_n = sum_g s_g t_g (sum_{k in g} X_k q_k  -  z_g sum_{k in g} X_k)
// (in-L2 rate 1.55x that of vdpbf16ps dot products; from DRAM 0.85 instead of 0.74 of the bandwidth probe, 3b shapes).
//
// Weight layout (w4_pack below): rows in blocks of kRows; a row block is K/128 column
// blocks, each holding its kRows rows' 128 columns one after the other; a row's 128 columns are 32 little-endian
// 16-bit words, word j holding columns j, j+32, j+64, j+96 in nibbles 0..3.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int kRows = 4;  // rows in flight: independent accumulators hide the dot products' latency
constexpr int64_t kBf16PrefetchElements = 512;  // 1 KB ahead in each row (best of 256 B to 2 KB here)
// int4 weights are prefetched 8 KB ahead of their stream into L2: the hardware prefetcher alone left decode GEMVs at
// ~19 GB/s median (3b shapes, 2 threads), 30-35 with it (4-32 KB ahead all helped; into L1 or L2 alike).
constexpr int64_t kInt4PrefetchBytes = 8192;

// Denormal floats cost ~100 cycles per instruction that touches them on Intel cores: a softmax over scores spread
// wider than 87 (e^x below fp32's normal range) or silu of a large |g| slowed one-token attention and the MLP
// activation several times over on a random-weight 3b model. What they add is below fp32's normal range, so every
// kernel runs with them flushed to zero (MXCSR's FTZ and DAZ) and gives the caller its own mode back.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned int saved_;
};

// at::parallel_for with denormals flushed in every thread that runs a chunk.
template <typename F>
void parallel_chunks(int64_t begin, int64_t end, int64_t grain, const F& chunk) {
  at::parallel_for(begin, end, grain, [&](int64_t chunk_begin, int64_t chunk_end) {
    FlushDenormals flushed;
    chunk(chunk_begin, chunk_end);
  });
}

inline __m512bh as_bf16(__m512i v) {
  __m512bh out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
}

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

// The first `left` of 16 lanes (all 16 when left >= 16, none when left <= 0).
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF)
                    : static_cast<__mmask16>((1u << std::max<int64_t>(left, 0)) - 1);
}

// 16 bf16 values (masked lanes 0) as fp32 lanes: bf16 is fp32's high half.
inline __m512 load_bf16x16(const uint16_t* p, __mmask16 mask) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}

// One block of kRows rows: their weights are one contiguous stream (see the layout above), so the hardware
// prefetcher sees a single sequential read per thread (rows side by side would be 4 short streams: 3x slower).
// kChunksPerGroup = group / 32. Each row has one int32 accumulator per group (a second chain per row, which the
// vdpbf16ps dot products need, only cost an add per group here: the kRows rows are enough independent chains). Every
// 512-bit op runs on ports 0 and 5 only, shifts on port 0 alone, so nibbles come out of a word with as few shifts as
// possible: the lowest by a mask, the highest by a shift, the middle two the same way from the word with its bytes
// swapped (vpshufb, port 5): 1.15x the compute rate of a shift and a mask per nibble. x: the activation row in
// fixed point (to_fixed_point below); `combined`: scratch for kRows x groups floats, s_g t_g of these rows.

template <int kChunksPerGroup>
void row_block_dot(const int16_t* x, const float* step, const float* x_sums, const uint8_t* w,
                   const uint16_t* scales, const uint8_t* zeros, float* y, int64_t k, int64_t groups,
                   float* combined) {
  for (int r = 0; r < kRows; ++r) {
    for (int64_t g = 0; g < groups; g += 16) {
      const __mmask16 mask = tail_mask(groups - g);
      _mm512_mask_storeu_ps(combined + r * groups + g, mask,
                            _mm512_mul_ps(load_bf16x16(scales + r * groups + g, mask),
                                          _mm512_maskz_loadu_ps(mask, step + g)));
    }
  }
  const __m512i nibble = _mm512_set1_epi16(0x000F);
  const __m512i byte_swap = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  __m512 acc[kRows];
  __m512i group_acc[kRows];
  for (int r = 0; r < kRows; ++r) {
    acc[r] = _mm512_setzero_ps();
    group_acc[r] = _mm512_setzero_si512();
  }
  // Scale every row's exact group sum by s_g t_g into acc, and restart it.
  auto close_group = [&](int64_t g) {
    for (int r = 0; r < kRows; ++r) {
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(group_acc[r]), _mm512_set1_ps(combined[r * groups + g]), acc[r]);
      group_acc[r] = _mm512_setzero_si512();
    }
  };
  for (int64_t block = 0; block < k / 128; ++block) {
    const uint8_t* block_weights = w + block * kRows * 64;
    __m512i packed[kRows], swapped[kRows];
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(block_weights + r * 64 + kInt4PrefetchBytes), _MM_HINT_T1);
      packed[r] = _mm512_loadu_si512(block_weights + r * 64);
      swapped[r] = _mm512_shuffle_epi8(packed[r], byte_swap);  // nibbles 2, 3, 0, 1
    }
    for (int m = 0; m < 4; ++m) {
      const __m512i xs = _mm512_loadu_si512(x + block * 128 + m * 32);
      for (int r = 0; r < kRows; ++r) {
        // nibble m of each 16-bit word as an int16
        const __m512i weights = m == 0 ? _mm512_and_si512(packed[r], nibble)
                                : m == 1 ? _mm512_srli_epi16(swapped[r], 12)
                                : m == 2 ? _mm512_and_si512(swapped[r], nibble)
                                         : _mm512_srli_epi16(packed[r], 12);
        group_acc[r] = _mm512_dpwssd_epi32(group_acc[r], xs, weights);
      }
      if (kChunksPerGroup < 4 && (m + 1) % kChunksPerGroup == 0) close_group((block * 4 + m) / kChunksPerGroup);
    }
    if (kChunksPerGroup >= 4 && (block + 1) % (kChunksPerGroup / 4) == 0) close_group(block / (kChunksPerGroup / 4));
  }
  for (int r = 0; r < kRows; ++r) {
    __m512 offset = _mm512_setzero_ps();  // sum_g s_g t_g z_g sum_{k in g} X_k, 16 groups at a time
    for (int64_t g = 0; g < groups; g += 16) {
      const __mmask16 mask = tail_mask(groups - g);
      const __m512 z = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, zeros + r * groups + g)));
      const __m512 coefficient = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, combined + r * groups + g), z);
      offset = _mm512_fmadd_ps(coefficient, _mm512_maskz_loadu_ps(mask, x_sums + g), offset);
    }
    y[r] = _mm512_reduce_add_ps(acc[r]) - _mm512_reduce_add_ps(offset);
  }
}

// One activation row in fixed point per group (see the top of this file): X [k] int16, step [groups] = t_g, sums
// [groups] = sum of X over the group (exact in fp32: at most 256 x 2^15). A group holding inf or NaN gets step NaN,
// so the output is NaN as a float GEMV's would be (the engine checks its logits for that).
void to_fixed_point(const uint16_t* x, int64_t k, int64_t group, int16_t* out, float* step, float* sums) {
  for (int64_t g = 0; g < k / group; ++g) {
    const uint16_t* xg = x + g * group;
    __m512 largest = _mm512_setzero_ps();
    __mmask16 non_finite = 0;
    for (int64_t c = 0; c < group; c += 16) {
      const __m512 magnitude = _mm512_abs_ps(load_bf16x16(xg + c, 0xFFFF));
      non_finite |= _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(3.4028235e38f), _CMP_NLE_UQ);
      largest = _mm512_max_ps(largest, magnitude);
    }
    int exponent = 0;  // largest < 2^exponent
    std::frexp(_mm512_reduce_max_ps(largest), &exponent);
    step[g] = non_finite ? NAN : std::ldexp(1.f, exponent - 15);
    const __m512 up = _mm512_set1_ps(static_cast<float>(15 - exponent));
    __m512i total = _mm512_setzero_si512();
    for (int64_t c = 0; c < group; c += 16) {
      // x 2^(15 - exponent) by vscalefps (no overflow of the factor for tiny groups), rounded to nearest even
      const __m512i fixed = non_finite ? _mm512_setzero_si512()
                                       : _mm512_cvtps_epi32(_mm512_scalef_ps(load_bf16x16(xg + c, 0xFFFF), up));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * group + c), _mm512_cvtepi32_epi16(fixed));
      total = _mm512_add_epi32(total, fixed);
    }
    sums[g] = static_cast<float>(_mm512_reduce_add_epi32(total));
  }
}

using RowBlockDot = void (*)(const int16_t*, const float*, const float*, const uint8_t*, const uint16_t*,
                             const uint8_t*, float*, int64_t, int64_t, float*);

RowBlockDot row_block_dot_for(int64_t group) {
  switch (group) {
    case 32: return row_block_dot<1>;
    case 64: return row_block_dot<2>;
    case 128: return row_block_dot<4>;
    case 256: return row_block_dot<8>;
  }
  TORCH_CHECK(false, "int4 group size must be 32, 64, 128 or 256, not ", group);
}

void check_int4_operands(const torch::Tensor& weight, const torch::Tensor& scales, const torch::Tensor& zeros,
                         int64_t k, int64_t group) {
  const int64_t n = scales.size(0);
  TORCH_CHECK(k % 128 == 0 && group % 32 == 0 && k % group == 0, "K must be a multiple of 128 and of the group");
  TORCH_CHECK(n % kRows == 0, "N must be a multiple of ", kRows);
  TORCH_CHECK(weight.scalar_type() == torch::kUInt8 && weight.is_contiguous() && weight.numel() * 2 == n * k,
              "weight: contiguous uint8 holding N x K nibbles");
  TORCH_CHECK(scales.dim() == 2 && scales.size(1) == k / group && scales.scalar_type() == torch::kBFloat16 &&
              scales.is_contiguous(), "scales: contiguous bf16 [N, K/group]");
  TORCH_CHECK(zeros.sizes() == scales.sizes() && zeros.scalar_type() == torch::kUInt8 && zeros.is_contiguous(),
              "zeros: contiguous uint8 [N, K/group]");
}

// x: bf16 [M, K]; weight: uint8 [N / kRows, K / 128, kRows, 64] (layout above); scales bf16 and zeros uint8
// [N, K / group]. N must be a multiple of kRows (prepare pads it with zero rows). Returns [M, N], fp32 or (bf16_out,
// what a bf16 model's next op takes: one conversion op less per call) bf16.
torch::Tensor w4a16_gemv(torch::Tensor x, torch::Tensor weight, torch::Tensor scales, torch::Tensor zeros,
                         int64_t group, bool bf16_out) {
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: contiguous bf16 [M, K]");
  const int64_t m_rows = x.size(0), k = x.size(1), n = scales.size(0);
  check_int4_operands(weight, scales, zeros, k, group);
  const int64_t groups = k / group;
  auto y = torch::empty({m_rows, n}, x.options().dtype(bf16_out ? torch::kBFloat16 : torch::kFloat));
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  std::vector<int16_t> fixed(m_rows * k);
  std::vector<float> steps(m_rows * groups), x_sums(m_rows * groups);
  for (int64_t i = 0; i < m_rows; ++i) {
    to_fixed_point(xp + i * k, k, group, fixed.data() + i * k, steps.data() + i * groups, x_sums.data() + i * groups);
  }
  const auto* wp = weight.data_ptr<uint8_t>();
  const auto* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>());
  const uint8_t* zp = zeros.data_ptr<uint8_t>();
  float* y_fp32 = bf16_out ? nullptr : y.data_ptr<float>();
  at::BFloat16* y_bf16 = bf16_out ? y.data_ptr<at::BFloat16>() : nullptr;
  const RowBlockDot dot = row_block_dot_for(group);
  parallel_chunks(0, n / kRows, 1, [&](int64_t begin, int64_t end) {
    float block_out[kRows];
    std::vector<float> combined(kRows * groups);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * kRows;
      for (int64_t i = 0; i < m_rows; ++i) {
        dot(fixed.data() + i * k, steps.data() + i * groups, x_sums.data() + i * groups, wp + n0 * (k / 2),
            sp + n0 * groups, zp + n0 * groups, block_out, k, groups, combined.data());
        for (int r = 0; r < kRows; ++r) {
          if (bf16_out) {
            y_bf16[i * n + n0 + r] = at::BFloat16(block_out[r]);
          } else {
            y_fp32[i * n + n0 + r] = block_out[r];
          }
        }
      }
    }
  });
  return y;
}

// The storage format (uint8 [N, ceil(K/2)], column 2c in the low nibble of byte c, 2c+1 in the high) -> the layout
// above for n_pad rows and k_pad columns, padding with q = 8, written into `out` (uint8 [n_pad / kRows, k_pad / 128 *
// kRows * 64], which the caller allocates: on huge pages) and returned. No temporaries: building it from torch ops
// left ~1.5 GB of freed-but-fragmented heap behind on a 3B model.
torch::Tensor w4_pack(torch::Tensor qweight, int64_t k, int64_t n_pad, int64_t k_pad, torch::Tensor out) {
  TORCH_CHECK(qweight.scalar_type() == torch::kUInt8 && qweight.dim() == 2 && qweight.is_contiguous() &&
              qweight.size(1) == (k + 1) / 2, "qweight: contiguous uint8 [N, ceil(K/2)]");
  const int64_t n = qweight.size(0), in_bytes = qweight.size(1), blocks = k_pad / 128;
  TORCH_CHECK(n_pad >= n && n_pad % kRows == 0 && k_pad >= k && k_pad % 128 == 0, "w4_pack: bad padding");
  TORCH_CHECK(out.scalar_type() == torch::kUInt8 && out.is_contiguous() && out.dim() == 2 &&
              out.size(0) == n_pad / kRows && out.size(1) == blocks * kRows * 64,
              "w4_pack: out must be contiguous uint8 [n_pad / ", kRows, ", k_pad / 128 * ", kRows * 64, "]");
  const uint8_t* src = qweight.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  parallel_chunks(0, n_pad, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t block = 0; block < blocks; ++block) {
        uint16_t words[32];
        for (int j = 0; j < 32; ++j) {
          uint16_t word = 0;
          for (int m = 0; m < 4; ++m) {
            const int64_t col = block * 128 + m * 32 + j;
            const uint16_t q = (row < n && col < k) ? (src[row * in_bytes + col / 2] >> ((col & 1) * 4)) & 0xF : 8;
            word |= q << (4 * m);
          }
          words[j] = word;
        }
        std::memcpy(dst + ((row / kRows * blocks + block) * kRows + row % kRows) * 64, words, sizeof(words));
      }
    }
  });
  return out;
}

// Rows [row_begin, row_begin + rows) of the same weights as bf16 into out [rows, K], w = (q - z) s rounded once:
// for prefill, where one dequantization feeds a bf16 GEMM over many activation rows instead of converting every
// weight once per row. The caller tiles the rows so that `out` stays a small reused buffer.
void w4_dequantize(torch::Tensor weight, torch::Tensor scales, torch::Tensor zeros, int64_t k, int64_t group,
                   int64_t row_begin, int64_t rows, torch::Tensor out) {
  const int64_t n = scales.size(0), groups = k / group;
  check_int4_operands(weight, scales, zeros, k, group);
  TORCH_CHECK(row_begin % kRows == 0 && rows % kRows == 0 && row_begin >= 0 && row_begin + rows <= n,
              "w4_dequantize: rows outside the weight or not whole row blocks");
  TORCH_CHECK(out.scalar_type() == torch::kBFloat16 && out.is_contiguous() && out.numel() >= rows * k,
              "w4_dequantize: out must be contiguous bf16 with room for rows x K");
  const auto* wp = weight.data_ptr<uint8_t>();
  const auto* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>());
  const uint8_t* zp = zeros.data_ptr<uint8_t>();
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const int64_t chunks_per_group = group / 32;
  parallel_chunks(row_begin / kRows, (row_begin + rows) / kRows, 1, [&](int64_t begin, int64_t end) {
    const __m512i nibble = _mm512_set1_epi32(0x000F000F);
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t* w = wp + b * kRows * (k / 2);
      for (int64_t block = 0; block < k / 128; ++block) {
        for (int r = 0; r < kRows; ++r) {
          const int64_t row = b * kRows + r, out_row = row - row_begin;
          const __m512i packed = _mm512_loadu_si512(w + (block * kRows + r) * 64);
          for (int m = 0; m < 4; ++m) {
            const int64_t g = (block * 4 + m) / chunks_per_group;
            const float s = bf16_to_float(sp[row * groups + g]);
            const __m512 scale = _mm512_set1_ps(s);
            const __m512 offset = _mm512_set1_ps(-s * zp[row * groups + g]);
            const __m512i q = _mm512_and_si512(_mm512_srli_epi16(packed, 4 * m), nibble);
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(q)));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(q, 1)));
            const __m512bh values = _mm512_cvtne2ps_pbh(_mm512_fmadd_ps(hi, scale, offset),
                                                        _mm512_fmadd_ps(lo, scale, offset));
            std::memcpy(op + out_row * k + block * 128 + m * 32, &values, sizeof(values));
          }
        }
      }
    }
  });
}

// y [M, N] = x [M, K] @ w [N, K]^T for bf16 x and w in torch's own Linear layout (no repacking), fp32 out. Rows
// go 4 at a time with software prefetch ahead in each: a row is a short stream (2560 bf16 = 5 KB) that the
// hardware prefetcher barely ramps up on, which held aten's bf16 GEMV to about half the memory bandwidth.
constexpr int kBf16Rows = 4;  // 2 was slower, 8 no faster

void bf16_rows_dot(const uint16_t* x, const uint16_t* w, float* y, int64_t rows, int64_t k) {
  __m512 acc[kBf16Rows];
  for (int r = 0; r < rows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < k; c += 32) {
    const __mmask32 mask = k - c >= 32 ? static_cast<__mmask32>(0xFFFFFFFFu)
                                       : static_cast<__mmask32>((1ull << (k - c)) - 1);
    const __m512bh xs = as_bf16(_mm512_maskz_loadu_epi16(mask, x + c));
    for (int r = 0; r < rows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + r * k + c + kBf16PrefetchElements), _MM_HINT_T0);
      acc[r] = _mm512_dpbf16_ps(acc[r], xs, as_bf16(_mm512_maskz_loadu_epi16(mask, w + r * k + c)));
    }
  }
  for (int r = 0; r < rows; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

torch::Tensor bf16_gemv(torch::Tensor x, torch::Tensor w) {
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: contiguous bf16 [M, K]");
  TORCH_CHECK(w.scalar_type() == torch::kBFloat16 && w.dim() == 2 && w.is_contiguous() && w.size(1) == x.size(1),
              "w: contiguous bf16 [N, K] with x's K");
  const int64_t m_rows = x.size(0), k = x.size(1), n = w.size(0);
  auto y = torch::empty({m_rows, n}, x.options().dtype(torch::kFloat));
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
  float* yp = y.data_ptr<float>();
  parallel_chunks(0, (n + kBf16Rows - 1) / kBf16Rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * kBf16Rows, rows = std::min<int64_t>(kBf16Rows, n - n0);
      for (int64_t i = 0; i < m_rows; ++i) bf16_rows_dot(xp + i * k, wp + n0 * k, yp + i * n + n0, rows, k);
    }
  });
  return y;
}

// Keys or values: a cache row of head_dim elements as fp32 lanes, 16 at a time (the last step masked).
template <typename T>
inline __m512 load_row16(const T* p, __mmask16 mask);

template <>
inline __m512 load_row16<float>(const float* p, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, p);
}

template <>
inline __m512 load_row16<at::BFloat16>(const at::BFloat16* p, __mmask16 mask) {
  return load_bf16x16(reinterpret_cast<const uint16_t*>(p), mask);
}

constexpr int kMaxHeadDim = 256;
// Cache rows are short (a head's 80 bf16 = 160 bytes) and each head's run is a fresh stream: without prefetching
// ahead, one-token attention read the cache at a quarter of the memory bandwidth.
constexpr int64_t kPrefetchRows = 8;  // best of 8 to 64 here

inline void prefetch_row(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t offset = 0; offset < bytes; offset += 64) _mm_prefetch(p + offset, _MM_HINT_T0);
}

// e^x for x <= 0 (scores minus their maximum), 16 at a time: 2^n e^f with n = round(x log2 e) applied by vscalefps
// and e^f, |f| <= ln2 / 2, by its Taylor polynomial to degree 7 (relative error < 1e-7; scalar expf takes 40% of
// one-token attention's time).
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));  // e^-104 is below the smallest fp32: 0 either way
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.6931471805599453f), x);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  for (const float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) {
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
  }
  return _mm512_scalef_ps(p, n);
}

// scores[t] <- e^(scores[t] - best) for t < length; returns their sum (softmax's denominator).
inline float exponentiate_scores(float* scores, int64_t length, float best) {
  __m512 sums = _mm512_setzero_ps();
  for (int64_t t = 0; t < length; t += 16) {
    const __mmask16 mask = tail_mask(length - t);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scores + t), _mm512_set1_ps(best)));
    _mm512_mask_storeu_ps(scores + t, mask, e);
    sums = _mm512_mask_add_ps(sums, mask, sums, e);
  }
  return _mm512_reduce_add_ps(sums);
}

// One query head over `length` cached positions: softmax(q K^T * scale) V, all in fp32. K and V are read once,
// straight from the cache (aten's SDPA reads a bf16 cache at well under the memory bandwidth on one new token).
template <typename T>
void attend_one_head(const float* q, const T* keys, const T* values, int64_t length, int64_t head_dim,
                     int64_t row_stride, float scale, float* scores, float* out) {
  const int64_t steps = (head_dim + 15) / 16;
  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(T));
  for (int64_t t = 0; t < std::min<int64_t>(kPrefetchRows, length); ++t) {
    prefetch_row(keys + t * row_stride, row_bytes);
    prefetch_row(values + t * row_stride, row_bytes);
  }
  __m512 qv[kMaxHeadDim / 16];
  __mmask16 masks[kMaxHeadDim / 16];
  for (int64_t s = 0; s < steps; ++s) {
    masks[s] = tail_mask(head_dim - s * 16);
    qv[s] = _mm512_maskz_loadu_ps(masks[s], q + s * 16);
  }
  float best = -INFINITY;
  for (int64_t t = 0; t < length; ++t) {
    const T* key = keys + t * row_stride;
    prefetch_row(keys + (t + kPrefetchRows) * row_stride, row_bytes);
    __m512 dot = _mm512_setzero_ps();
    for (int64_t s = 0; s < steps; ++s) dot = _mm512_fmadd_ps(qv[s], load_row16(key + s * 16, masks[s]), dot);
    scores[t] = _mm512_reduce_add_ps(dot) * scale;
    best = std::max(best, scores[t]);
  }
  const float total = exponentiate_scores(scores, length, best);
  __m512 acc[kMaxHeadDim / 16];
  for (int64_t s = 0; s < steps; ++s) acc[s] = _mm512_setzero_ps();
  for (int64_t t = 0; t < length; ++t) {
    const T* value = values + t * row_stride;
    prefetch_row(values + (t + kPrefetchRows) * row_stride, row_bytes);
    const __m512 p = _mm512_set1_ps(scores[t]);
    for (int64_t s = 0; s < steps; ++s) acc[s] = _mm512_fmadd_ps(p, load_row16(value + s * 16, masks[s]), acc[s]);
  }
  const __m512 inv = _mm512_set1_ps(1.f / total);
  for (int64_t s = 0; s < steps; ++s) _mm512_mask_storeu_ps(out + s * 16, masks[s], _mm512_mul_ps(acc[s], inv));
}

// 16 vectors -> one whose lane i is the sum of v[i]'s 16 lanes: a transposing tree of 45 shuffles and adds, ~3
// instructions a vector instead of the ~8 of a reduction each.
inline __m512 transpose_sum16(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: [v2i 0+2, v2i+1 0+2, v2i 1+3, v2i+1 1+3]
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane L: that lane's sums of v4i .. v4i+3
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0xEE));
  }
  const __m512 low = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x88),
                                   _mm512_shuffle_f32x4(quads[0], quads[1], 0xDD));
  const __m512 high = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x88),
                                    _mm512_shuffle_f32x4(quads[2], quads[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(low, high, 0x88), _mm512_shuffle_f32x4(low, high, 0xDD));
}

// 32 bf16 of a cache row (the last chunk masked) as fp32 lanes: its even elements and its odd ones, one
// instruction each (a 32-bit lane holds an even element in its low half, the next odd one in its high half).
inline void load_bf16x32_split(const at::BFloat16* p, __mmask32 mask, __m512& even, __m512& odd) {
  const __m512i pairs = _mm512_maskz_loadu_epi16(mask, p);
  even = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

inline __mmask32 tail_mask32(int64_t left) {
  return left >= 32 ? static_cast<__mmask32>(0xFFFFFFFFu) : static_cast<__mmask32>((1ull << left) - 1);
}

// attend_one_head for a bf16 cache, same math and order of fp32 sums per lane, with less work per cached row
// (one-token attention was compute-bound at about 1.7x the memory bandwidth): rows are split into even and odd
// elements instead of widened 16 at a time, and the scores of 16 keys are reduced together.
void attend_one_head_bf16(const float* q, const at::BFloat16* keys, const at::BFloat16* values, int64_t length,
                          int64_t head_dim, float scale, float* scores, float* out) {
  constexpr int kMaxChunks = kMaxHeadDim / 32;
  const int64_t chunks = (head_dim + 31) / 32;
  const int64_t row_bytes = head_dim * 2;
  for (int64_t t = 0; t < std::min<int64_t>(kPrefetchRows, length); ++t) {
    prefetch_row(keys + t * head_dim, row_bytes);
    prefetch_row(values + t * head_dim, row_bytes);
  }
  const __m512i even_index = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
  __m512 q_even[kMaxChunks], q_odd[kMaxChunks];
  __mmask32 masks[kMaxChunks];
  for (int64_t c = 0; c < chunks; ++c) {
    masks[c] = tail_mask32(head_dim - c * 32);
    const __m512 low = _mm512_maskz_loadu_ps(tail_mask(head_dim - c * 32), q + c * 32);
    const __m512 high = _mm512_maskz_loadu_ps(tail_mask(head_dim - c * 32 - 16), q + c * 32 + 16);
    q_even[c] = _mm512_permutex2var_ps(low, even_index, high);
    q_odd[c] = _mm512_permutex2var_ps(low, odd_index, high);
  }
  auto dot = [&](int64_t t) {
    prefetch_row(keys + (t + kPrefetchRows) * head_dim, row_bytes);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      __m512 even, odd;
      load_bf16x32_split(keys + t * head_dim + c * 32, masks[c], even, odd);
      sum = _mm512_fmadd_ps(q_even[c], even, _mm512_fmadd_ps(q_odd[c], odd, sum));
    }
    return sum;
  };
  __m512 best16 = _mm512_set1_ps(-INFINITY);
  const __m512 scale16 = _mm512_set1_ps(scale);
  int64_t t = 0;
  for (; t + 16 <= length; t += 16) {
    __m512 dots[16];
    for (int i = 0; i < 16; ++i) dots[i] = dot(t + i);
    const __m512 block = _mm512_mul_ps(transpose_sum16(dots), scale16);
    _mm512_storeu_ps(scores + t, block);
    best16 = _mm512_max_ps(best16, block);
  }
  float best = _mm512_reduce_max_ps(best16);
  for (; t < length; ++t) {
    scores[t] = _mm512_reduce_add_ps(dot(t)) * scale;
    best = std::max(best, scores[t]);
  }
  const float total = exponentiate_scores(scores, length, best);
  __m512 acc_even[kMaxChunks], acc_odd[kMaxChunks];
  for (int64_t c = 0; c < chunks; ++c) acc_even[c] = acc_odd[c] = _mm512_setzero_ps();
  for (int64_t i = 0; i < length; ++i) {
    prefetch_row(values + (i + kPrefetchRows) * head_dim, row_bytes);
    const __m512 weight = _mm512_set1_ps(scores[i]);
    for (int64_t c = 0; c < chunks; ++c) {
      __m512 even, odd;
      load_bf16x32_split(values + i * head_dim + c * 32, masks[c], even, odd);
      acc_even[c] = _mm512_fmadd_ps(weight, even, acc_even[c]);
      acc_odd[c] = _mm512_fmadd_ps(weight, odd, acc_odd[c]);
    }
  }
  const __m512 inv = _mm512_set1_ps(1.f / total);
  const __m512i low_index = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high_index = _mm512_add_epi32(low_index, _mm512_set1_epi32(8));
  for (int64_t c = 0; c < chunks; ++c) {  // interleave even and odd back into element order
    const __m512 even = _mm512_mul_ps(acc_even[c], inv), odd = _mm512_mul_ps(acc_odd[c], inv);
    _mm512_mask_storeu_ps(out + c * 32, tail_mask(head_dim - c * 32), _mm512_permutex2var_ps(even, low_index, odd));
    _mm512_mask_storeu_ps(out + c * 32 + 16, tail_mask(head_dim - c * 32 - 16),
                          _mm512_permutex2var_ps(even, high_index, odd));
  }
}

inline void attend_one_head(const float* q, const at::BFloat16* keys, const at::BFloat16* values, int64_t length,
                            int64_t head_dim, int64_t row_stride, float scale, float* scores, float* out) {
  TORCH_CHECK(row_stride == head_dim, "bf16 caches hold their rows contiguously");
  attend_one_head_bf16(q, keys, values, length, head_dim, scale, scores, out);
}

// q: [B, H, 1, D] (any float dtype); k_cache, v_cache: [B, H_kv, capacity, D] of one dtype (fp32 or bf16) whose
// first `length` positions are filled. H must be a multiple of H_kv (grouped-query attention). Returns fp32
// [B, H, 1, D].
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, int64_t length,
                               double scale) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(),
              "decode_attention: q [B, H, 1, D], caches [B, H_kv, capacity, D]");
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type() &&
              (k_cache.scalar_type() == torch::kFloat || k_cache.scalar_type() == torch::kBFloat16),
              "decode_attention: caches must both be fp32 or both bf16");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "decode_attention: contiguous caches");
  const int64_t batch = q.size(0), heads = q.size(1), head_dim = q.size(3);
  const int64_t kv_heads = k_cache.size(1), capacity = k_cache.size(2);
  TORCH_CHECK(k_cache.size(0) == batch && k_cache.size(3) == head_dim && heads % kv_heads == 0,
              "decode_attention: q and caches disagree");
  TORCH_CHECK(head_dim <= kMaxHeadDim, "decode_attention: head_dim over ", kMaxHeadDim);
  TORCH_CHECK(length >= 1 && length <= capacity, "decode_attention: length ", length, " outside [1, ", capacity, "]");
  auto qf = q.to(torch::kFloat).contiguous();
  auto out = torch::empty({batch, heads, 1, head_dim}, q.options().dtype(torch::kFloat));
  const float* qp = qf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = heads / kv_heads;
  auto run = [&](auto* keys_base, auto* values_base) {
    parallel_chunks(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(length);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / heads, h = bh % heads, kvh = h / group;
        const int64_t offset = (b * kv_heads + kvh) * capacity * head_dim;
        attend_one_head(qp + bh * head_dim, keys_base + offset, values_base + offset, length, head_dim, head_dim,
                        static_cast<float>(scale), scores.data(), op + bh * head_dim);
      }
    });
  };
  if (k_cache.scalar_type() == torch::kFloat) {
    run(k_cache.data_ptr<float>(), v_cache.data_ptr<float>());
  } else {
    run(k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>());
  }
  return out;
}


// ---- Small per-layer steps of a bf16 decoder's one-token step. Each replaces 10-30 aten ops whose dispatch cost
// (~2-3 us each, ~75 per layer) is 16% of a 3b int4 token; the math and its bf16 rounding points are HF Llama's.

inline __m256i to_bf16_bits(__m512 v) {  // round to nearest even (vcvtneps2bf16), as torch's casts round
  const __m256bh packed = _mm512_cvtneps_pbh(v);
  __m256i bits;
  std::memcpy(&bits, &packed, sizeof(bits));
  return bits;
}

inline __m512 round_to_bf16(__m512 v) {  // the bf16 value of v, back in fp32 lanes
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(to_bf16_bits(v)), 16));
}

inline void store_bf16x16(uint16_t* p, __m512 v, __mmask16 mask) {
  _mm256_mask_storeu_epi16(p, mask, to_bf16_bits(v));
}

// LlamaRMSNorm in bf16: weight * bf16(x * rsqrt(mean(x^2) + eps)), statistics in fp32. x: bf16 [M, H].
torch::Tensor rms_norm_bf16(torch::Tensor x, torch::Tensor weight, double eps) {
  FlushDenormals flushed;
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.is_contiguous() && x.dim() >= 1, "x: contiguous bf16");
  const int64_t h = x.size(-1), rows = x.numel() / std::max<int64_t>(h, 1);
  TORCH_CHECK(weight.scalar_type() == torch::kBFloat16 && weight.is_contiguous() && weight.numel() == h,
              "weight: contiguous bf16 [H]");
  auto out = torch::empty_like(x);
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const auto* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* row = xp + r * h;
    __m512 squares = _mm512_setzero_ps();
    for (int64_t c = 0; c < h; c += 16) {
      const __m512 v = load_bf16x16(row + c, tail_mask(h - c));
      squares = _mm512_fmadd_ps(v, v, squares);
    }
    const float inv = 1.f / std::sqrt(_mm512_reduce_add_ps(squares) / static_cast<float>(h) + static_cast<float>(eps));
    const __m512 scale = _mm512_set1_ps(inv);
    for (int64_t c = 0; c < h; c += 16) {
      const __mmask16 mask = tail_mask(h - c);
      const __m512 normed = round_to_bf16(_mm512_mul_ps(load_bf16x16(row + c, mask), scale));
      store_bf16x16(op + r * h + c, _mm512_mul_ps(load_bf16x16(wp + c, mask), normed), mask);
    }
  }
  return out;
}

// silu(g) = g / (1 + e^-g) in fp32 lanes; e^-|g| stays in (0, 1] (no overflow), folded back for g < 0. Below -88.72
// aten's e^-g overflows to inf and silu is -0: e = 0 there gives the same.
inline __m512 silu16(__m512 g) {
  const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(g, _mm512_set1_ps(-88.72284f), _CMP_GE_OQ),
                                       exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g))));
  const __mmask16 negative = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_div_ps(_mm512_mask_mul_ps(g, negative, g, e), _mm512_add_ps(_mm512_set1_ps(1.f), e));
}

// LlamaMLP's activation in bf16: bf16(bf16(silu(gate)) * up). gate, up: contiguous bf16 of one shape (views of
// the fused gate/up projection's halves do).
torch::Tensor silu_mul_bf16(torch::Tensor gate, torch::Tensor up) {
  FlushDenormals flushed;
  TORCH_CHECK(gate.scalar_type() == torch::kBFloat16 && up.scalar_type() == torch::kBFloat16 &&
              gate.is_contiguous() && up.is_contiguous() && gate.sizes() == up.sizes(),
              "silu_mul_bf16: gate and up must be contiguous bf16 of one shape");
  auto out = torch::empty_like(gate);
  const auto* gp = reinterpret_cast<const uint16_t*>(gate.data_ptr<at::BFloat16>());
  const auto* up_p = reinterpret_cast<const uint16_t*>(up.data_ptr<at::BFloat16>());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const int64_t n = gate.numel();
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 mask = tail_mask(n - c);
    store_bf16x16(op + c, _mm512_mul_ps(round_to_bf16(silu16(load_bf16x16(gp + c, mask))),
                                        load_bf16x16(up_p + c, mask)), mask);
  }
  return out;
}

// HF's apply_rotary_pos_emb on one head in bf16: bf16(bf16(x cos) + bf16(rotate_half(x) sin)), to fp32 lanes.
inline void rope_head(const uint16_t* x, const uint16_t* cos, const uint16_t* sin, int64_t head_dim, float* out) {
  const int64_t half = head_dim / 2;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float rotated = d < half ? -bf16_to_float(x[d + half]) : bf16_to_float(x[d - half]);
    const float a = static_cast<float>(at::BFloat16(bf16_to_float(x[d]) * bf16_to_float(cos[d])));
    const float b = static_cast<float>(at::BFloat16(rotated * bf16_to_float(sin[d])));
    out[d] = static_cast<float>(at::BFloat16(a + b));
  }
}

// The attention block of a one-token bf16 decode step after the q/k/v projection, batch 1: RoPE on q and k (cos,
// sin: bf16 [D] of the new position), k and v written into the bf16 caches [1, H_kv, capacity, D] at `position`,
// then softmax(q K^T * scale) V over positions [0, position]. q, k, v: contiguous bf16 of H*D, H_kv*D, H_kv*D
// elements (views into the fused projection's output do). Returns bf16 [1, 1, H*D], o_proj's input.
torch::Tensor rope_cache_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor cos,
                                   torch::Tensor sin, torch::Tensor k_cache, torch::Tensor v_cache, int64_t position,
                                   double scale) {
  FlushDenormals flushed;  // the RoPE and cache write below; the attention's chunks flush their own threads
  for (const auto* t : {&q, &k, &v, &cos, &sin, &k_cache, &v_cache}) {
    TORCH_CHECK(t->scalar_type() == torch::kBFloat16 && t->is_contiguous(),
                "rope_cache_attention: every tensor must be contiguous bf16");
  }
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.size(0) == 1 && k_cache.sizes() == v_cache.sizes(),
              "rope_cache_attention: caches [1, H_kv, capacity, D]");
  const int64_t kv_heads = k_cache.size(1), capacity = k_cache.size(2), head_dim = k_cache.size(3);
  TORCH_CHECK(head_dim <= kMaxHeadDim && head_dim % 2 == 0, "rope_cache_attention: head_dim must be even, <= ",
              kMaxHeadDim);
  TORCH_CHECK(q.numel() % head_dim == 0 && k.numel() == kv_heads * head_dim && v.numel() == k.numel() &&
              cos.numel() == head_dim && sin.numel() == head_dim, "rope_cache_attention: shapes disagree");
  const int64_t heads = q.numel() / head_dim;
  TORCH_CHECK(heads % kv_heads == 0, "rope_cache_attention: heads must be a multiple of kv heads");
  TORCH_CHECK(position >= 0 && position < capacity, "rope_cache_attention: position ", position, " outside [0, ",
              capacity, ")");
  const auto* qp = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  const auto* kp = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  const auto* vp = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  const auto* cp = reinterpret_cast<const uint16_t*>(cos.data_ptr<at::BFloat16>());
  const auto* sp = reinterpret_cast<const uint16_t*>(sin.data_ptr<at::BFloat16>());
  auto* kc = k_cache.data_ptr<at::BFloat16>();
  auto* vc = v_cache.data_ptr<at::BFloat16>();
  float rotated[kMaxHeadDim];
  for (int64_t h = 0; h < kv_heads; ++h) {
    rope_head(kp + h * head_dim, cp, sp, head_dim, rotated);
    at::BFloat16* key = kc + (h * capacity + position) * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) key[d] = at::BFloat16(rotated[d]);  // exact: already bf16 values
    std::memcpy(vc + (h * capacity + position) * head_dim, vp + h * head_dim, head_dim * sizeof(uint16_t));
  }
  auto out = torch::empty({1, 1, heads * head_dim}, q.options());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const int64_t group = heads / kv_heads, length = position + 1;
  parallel_chunks(0, heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(length);
    float q_rotated[kMaxHeadDim], attended[kMaxHeadDim];
    for (int64_t h = begin; h < end; ++h) {
      rope_head(qp + h * head_dim, cp, sp, head_dim, q_rotated);
      const int64_t offset = (h / group) * capacity * head_dim;
      attend_one_head(q_rotated, kc + offset, vc + offset, length, head_dim, head_dim, static_cast<float>(scale),
                      scores.data(), attended);
      for (int64_t d = 0; d < head_dim; d += 16) {
        store_bf16x16(op + h * head_dim + d, _mm512_maskz_loadu_ps(tail_mask(head_dim - d), attended + d),
                      tail_mask(head_dim - d));
      }
    }
  });
  return out;
}

// A whole one-token step of a bf16 Llama layer whose projections are int4 in our layout, batch 1: the composition
// of the steps above (and aten's bf16 adds for the residuals) in one call from Python instead of ~12. Each int4
// projection is (weight, scales, zeros) as w4a16_gemv takes them, unpadded; qkv and gate_up are the fused ones.
// x: bf16 [1, 1, H]. Returns the layer's output, [1, 1, H].
torch::Tensor int4_layer_step(torch::Tensor x, torch::Tensor input_norm, double input_eps, torch::Tensor post_norm,
                              double post_eps, std::vector<torch::Tensor> qkv, std::vector<torch::Tensor> o,
                              std::vector<torch::Tensor> gate_up, std::vector<torch::Tensor> down, int64_t group,
                              int64_t q_features, int64_t kv_features, torch::Tensor cos, torch::Tensor sin,
                              torch::Tensor k_cache, torch::Tensor v_cache, int64_t position, double scale) {
  for (const auto* projection : {&qkv, &o, &gate_up, &down}) {
    TORCH_CHECK(projection->size() == 3, "int4_layer_step: a projection is (weight, scales, zeros)");
  }
  TORCH_CHECK(x.dim() == 3 && x.size(0) == 1 && x.size(1) == 1, "int4_layer_step: x must be [1, 1, H]");
  const int64_t hidden = x.size(2);
  TORCH_CHECK(qkv[1].size(0) == q_features + 2 * kv_features && down[1].size(0) == hidden && o[1].size(0) == hidden,
              "int4_layer_step: projection sizes disagree with the hidden size and head counts");
  const auto project = [group](const torch::Tensor& input, const std::vector<torch::Tensor>& w) {
    return w4a16_gemv(input.reshape({1, input.size(-1)}), w[0], w[1], w[2], group, true);
  };
  const torch::Tensor projected = project(rms_norm_bf16(x, input_norm, input_eps), qkv);
  const torch::Tensor attended = rope_cache_attention(
      projected.narrow(1, 0, q_features), projected.narrow(1, q_features, kv_features),
      projected.narrow(1, q_features + kv_features, kv_features), cos, sin, k_cache, v_cache, position, scale);
  const torch::Tensor h = x + project(attended, o).view_as(x);
  const torch::Tensor gate_and_up = project(rms_norm_bf16(h, post_norm, post_eps), gate_up);
  const int64_t ff = gate_and_up.size(1) / 2;
  const torch::Tensor activated = silu_mul_bf16(gate_and_up.narrow(1, 0, ff), gate_and_up.narrow(1, ff, ff));
  return h + project(activated, down).view_as(x);
}

// ---- One-token step of an fp32 Llama layer (the embedded default model: 256 wide, 4 layers). Its ~30 aten ops per
// layer cost 8-15 us each on the 2-core machine of our benchmarks, several times the arithmetic, and a matrix too small to split between the
// cores costs more to hand over than to compute: so these run on the calling thread below kF32ParallelElements.

constexpr int64_t kF32ParallelElements = 1 << 20;  // 4 MB of fp32 weights per matrix

// y[n] = W[n, :] . x for rows [begin, end) of an fp32 Linear weight [N, K], 4 rows at a time.
void f32_rows_dot(const float* x, const float* w, float* y, int64_t begin, int64_t end, int64_t k) {
  for (int64_t n0 = begin; n0 < end; n0 += 4) {
    const int64_t rows = std::min<int64_t>(4, end - n0);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t c = 0; c < k; c += 16) {
      const __mmask16 mask = tail_mask(k - c);
      const __m512 xs = _mm512_maskz_loadu_ps(mask, x + c);
      for (int r = 0; r < rows; ++r) {
        acc[r] = _mm512_fmadd_ps(xs, _mm512_maskz_loadu_ps(mask, w + (n0 + r) * k + c), acc[r]);
      }
    }
    for (int r = 0; r < rows; ++r) y[n0 + r] = _mm512_reduce_add_ps(acc[r]);
  }
}

void f32_gemv(const float* x, const torch::Tensor& weight, float* y) {
  const int64_t n = weight.size(0), k = weight.size(1);
  const float* w = weight.data_ptr<float>();
  if (n * k < kF32ParallelElements) {
    f32_rows_dot(x, w, y, 0, n, k);
    return;
  }
  parallel_chunks(0, (n + 3) / 4, 1, [&](int64_t begin, int64_t end) {
    f32_rows_dot(x, w, y, begin * 4, std::min(end * 4, n), k);
  });
}

// LlamaRMSNorm in fp32: weight * (x * rsqrt(mean(x^2) + eps)).
void f32_rms_norm(const float* x, const float* weight, double eps, int64_t h, float* out) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t c = 0; c < h; c += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(h - c), x + c);
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  const __m512 scale = _mm512_set1_ps(
      1.f / std::sqrt(_mm512_reduce_add_ps(squares) / static_cast<float>(h) + static_cast<float>(eps)));
  for (int64_t c = 0; c < h; c += 16) {
    const __mmask16 mask = tail_mask(h - c);
    const __m512 normed = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + c), scale);
    _mm512_mask_storeu_ps(out + c, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, weight + c), normed));
  }
}

// HF's apply_rotary_pos_emb on one fp32 head: x cos + rotate_half(x) sin.
void f32_rope_head(const float* x, const float* cos, const float* sin, int64_t head_dim, float* out) {
  const int64_t half = head_dim / 2;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float rotated = d < half ? -x[d + half] : x[d - half];
    const float a = x[d] * cos[d];
    const float b = rotated * sin[d];
    out[d] = a + b;
  }
}

// A whole one-token step of an fp32 Llama layer with plain Linear projections (no bias), batch 1: RMSNorm, q/k/v,
// RoPE, KV cache write at `position`, attention over [0, position], o, residual, RMSNorm, SiLU(gate) * up, down,
// residual. x: fp32 [1, 1, H]; weights fp32 [out, in] contiguous; cos, sin: fp32 [D] of the position; caches fp32
// [1, H_kv, capacity, D]. Returns the layer's output, [1, 1, H].
torch::Tensor f32_layer_step(torch::Tensor x, torch::Tensor input_norm, double input_eps, torch::Tensor post_norm,
                             double post_eps, torch::Tensor wq, torch::Tensor wk, torch::Tensor wv, torch::Tensor wo,
                             torch::Tensor wg, torch::Tensor wu, torch::Tensor wd, torch::Tensor cos, torch::Tensor sin,
                             torch::Tensor k_cache, torch::Tensor v_cache, int64_t position, double scale) {
  FlushDenormals flushed;
  for (const auto* t : {&x, &input_norm, &post_norm, &wq, &wk, &wv, &wo, &wg, &wu, &wd, &cos, &sin, &k_cache,
                        &v_cache}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->is_contiguous(),
                "f32_layer_step: every tensor must be contiguous fp32");
  }
  TORCH_CHECK(x.dim() == 3 && x.size(0) == 1 && x.size(1) == 1, "f32_layer_step: x must be [1, 1, H]");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.size(0) == 1 && k_cache.sizes() == v_cache.sizes(),
              "f32_layer_step: caches [1, H_kv, capacity, D]");
  const int64_t hidden = x.size(2), kv_heads = k_cache.size(1), capacity = k_cache.size(2);
  const int64_t head_dim = k_cache.size(3), ff = wg.size(0);
  TORCH_CHECK(head_dim <= kMaxHeadDim && head_dim % 2 == 0, "f32_layer_step: head_dim must be even, <= ",
              kMaxHeadDim);
  TORCH_CHECK(wq.size(0) % head_dim == 0 && (wq.size(0) / head_dim) % kv_heads == 0, "f32_layer_step: heads");
  const int64_t heads = wq.size(0) / head_dim;
  TORCH_CHECK(wq.size(1) == hidden && wk.sizes() == wv.sizes() && wk.size(0) == kv_heads * head_dim &&
              wk.size(1) == hidden && wo.size(0) == hidden && wo.size(1) == heads * head_dim &&
              wg.sizes() == wu.sizes() && wg.size(1) == hidden && wd.size(0) == hidden && wd.size(1) == ff &&
              input_norm.numel() == hidden && post_norm.numel() == hidden && cos.numel() == head_dim &&
              sin.numel() == head_dim, "f32_layer_step: shapes disagree");
  TORCH_CHECK(position >= 0 && position < capacity, "f32_layer_step: position ", position, " outside [0, ",
              capacity, ")");
  const float* xp = x.data_ptr<float>();
  std::vector<float> normed(hidden), q(heads * head_dim), k(kv_heads * head_dim), v(kv_heads * head_dim);
  std::vector<float> attended(heads * head_dim), h(hidden), gate(ff), up(ff), rotated(kMaxHeadDim);
  f32_rms_norm(xp, input_norm.data_ptr<float>(), input_eps, hidden, normed.data());
  f32_gemv(normed.data(), wq, q.data());
  f32_gemv(normed.data(), wk, k.data());
  f32_gemv(normed.data(), wv, v.data());
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
    f32_rope_head(k.data() + kvh * head_dim, cp, sp, head_dim, kc + (kvh * capacity + position) * head_dim);
    std::memcpy(vc + (kvh * capacity + position) * head_dim, v.data() + kvh * head_dim, head_dim * sizeof(float));
  }
  std::vector<float> scores(position + 1);
  for (int64_t head = 0; head < heads; ++head) {
    f32_rope_head(q.data() + head * head_dim, cp, sp, head_dim, rotated.data());
    const int64_t offset = (head / (heads / kv_heads)) * capacity * head_dim;
    attend_one_head(rotated.data(), kc + offset, vc + offset, position + 1, head_dim, head_dim,
                    static_cast<float>(scale), scores.data(), attended.data() + head * head_dim);
  }
  f32_gemv(attended.data(), wo, h.data());
  for (int64_t c = 0; c < hidden; ++c) h[c] += xp[c];
  f32_rms_norm(h.data(), post_norm.data_ptr<float>(), post_eps, hidden, normed.data());
  f32_gemv(normed.data(), wg, gate.data());
  f32_gemv(normed.data(), wu, up.data());
  for (int64_t c = 0; c < ff; c += 16) {  // silu(gate) * up
    const __mmask16 mask = tail_mask(ff - c);
    _mm512_mask_storeu_ps(gate.data() + c, mask, _mm512_mul_ps(silu16(_mm512_maskz_loadu_ps(mask, gate.data() + c)),
                                                                _mm512_maskz_loadu_ps(mask, up.data() + c)));
  }
  auto out = torch::empty_like(x);
  float* op = out.data_ptr<float>();
  f32_gemv(gate.data(), wd, op);
  for (int64_t c = 0; c < hidden; ++c) op[c] += h[c];
  return out;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // Kernels touch no Python objects: the GIL is released while they run, so the node's camera callbacks and
  // services keep running during a decode instead of waiting out a whole GEMV or layer step.
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.def("w4a16_gemv", &w4a16_gemv, "int4 x bf16 GEMV (AVX-512 BF16)", no_gil, py::arg("x"), py::arg("weight"),
        py::arg("scales"), py::arg("zeros"), py::arg("group"), py::arg("bf16_out") = false);
  m.def("w4_pack", &w4_pack, "int4 storage format -> the GEMV layout", no_gil);
  m.def("w4_dequantize", &w4_dequantize, "rows of int4 weights of the GEMV layout -> bf16", no_gil);
  m.def("bf16_gemv", &bf16_gemv, "bf16 x bf16 GEMV in Linear's weight layout", no_gil);
  m.def("decode_attention", &decode_attention, "attention of one new token over a KV cache", no_gil);
  m.def("rms_norm_bf16", &rms_norm_bf16, "LlamaRMSNorm of bf16 rows", no_gil);
  m.def("silu_mul_bf16", &silu_mul_bf16, "silu(gate) * up in bf16", no_gil);
  m.def("rope_cache_attention", &rope_cache_attention, "RoPE, KV cache write and attention of one bf16 token", no_gil);
  m.def("int4_layer_step", &int4_layer_step, "one bf16 token through a Llama layer with int4 projections", no_gil);
  m.def("f32_layer_step", &f32_layer_step, "one fp32 token through a Llama layer with fp32 Linear projections", no_gil);
}
