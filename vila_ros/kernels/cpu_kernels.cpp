// CPU kernels for decode (AVX-512 BF16), compiled on first use by vila_ros/kernels/__init__.py.
//
// 1. int4-weight x bf16-activation matrix-vector products (a few rows of activations), the repacking into their
//    layout, and the same weights dequantized to bf16 tiles for prefill.
// 2. bf16 matrix-vector products in torch's Linear layout.
// 3. Attention of one new token over a bf16 or fp32 KV cache.
//
// Why not aten's tinygemm: on decode it spends its time unpacking nibbles (3b shapes: ours is 1.15-1.4x faster per
// matrix on 2 threads, ~1.5x on one, interleaved runs on this VM). Here a nibble becomes a bf16 in one
// instruction: the 16-bit pattern 0x4300 | q is exactly the bf16 value 128 + q, so a masked shift-and-or
// (vpternlogd) turns 32 packed weights into 32 bf16 operands of vdpbf16ps. The offset comes back out per group:
//     y_n = sum_g s_g * sum_{k in g} x_k (128 + q_k)  -  sum_g s_g (128 + z_g) * sum_{k in g} x_k
// where s_g (128 + z_g) is exact in fp32 (bf16 scale times a 9-bit integer).
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

constexpr int kRows = 4;  // rows in flight: independent accumulators hide vdpbf16ps latency
constexpr int64_t kBf16PrefetchElements = 512;  // 1 KB ahead in each row (best of 256 B to 2 KB here)

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

// One block of kRows rows: their weights are one contiguous stream (see the layout above), so the hardware
// prefetcher sees a single sequential read per thread (rows side by side were 4 short streams: 3x slower).
void row_block_dot(const uint16_t* x, const float* xsum, const uint8_t* w, const uint16_t* scales,
                   const uint8_t* zeros, float* y, int64_t k, int64_t groups, int64_t chunks_per_group) {
  const __m512i nibble = _mm512_set1_epi32(0x000F000F);
  const __m512i bf16_128 = _mm512_set1_epi32(0x43004300);
  __m512 acc[kRows], group_acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = group_acc[r] = _mm512_setzero_ps();
  int64_t chunk = 0;
  for (int64_t block = 0; block < k / 128; ++block) {
    __m512i packed[kRows];
    for (int r = 0; r < kRows; ++r) packed[r] = _mm512_loadu_si512(w + (block * kRows + r) * 64);
    for (int m = 0; m < 4; ++m, ++chunk) {
      const __m512bh xs = as_bf16(_mm512_loadu_si512(x + block * 128 + m * 32));
      for (int r = 0; r < kRows; ++r) {
        const __m512i shifted = _mm512_srli_epi16(packed[r], 4 * m);
        const __m512i weights = _mm512_ternarylogic_epi32(shifted, nibble, bf16_128, 0xEA);  // (a & b) | c
        group_acc[r] = _mm512_dpbf16_ps(group_acc[r], xs, as_bf16(weights));
      }
      if ((chunk + 1) % chunks_per_group == 0) {
        const int64_t g = chunk / chunks_per_group;
        for (int r = 0; r < kRows; ++r) {
          acc[r] = _mm512_fmadd_ps(group_acc[r], _mm512_set1_ps(bf16_to_float(scales[r * groups + g])), acc[r]);
          group_acc[r] = _mm512_setzero_ps();
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    __m512 offset = _mm512_setzero_ps();  // sum_g s_g (128 + z_g) xsum_g, 16 groups at a time
    for (int64_t g = 0; g < groups; g += 16) {
      const __mmask16 mask = groups - g >= 16 ? static_cast<__mmask16>(0xFFFF)
                                              : static_cast<__mmask16>((1u << (groups - g)) - 1);
      const __m512 s = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, scales + r * groups + g)), 16));
      const __m512 z = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, zeros + r * groups + g)));
      const __m512 coefficient = _mm512_mul_ps(s, _mm512_add_ps(z, _mm512_set1_ps(128.f)));
      offset = _mm512_fmadd_ps(coefficient, _mm512_maskz_loadu_ps(mask, xsum + g), offset);
    }
    y[r] = _mm512_reduce_add_ps(acc[r]) - _mm512_reduce_add_ps(offset);
  }
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
// [N, K / group]. N must be a multiple of kRows (prepare pads it with zero rows). Returns fp32 [M, N].
torch::Tensor w4a16_gemv(torch::Tensor x, torch::Tensor weight, torch::Tensor scales, torch::Tensor zeros,
                         int64_t group) {
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: contiguous bf16 [M, K]");
  const int64_t m_rows = x.size(0), k = x.size(1), n = scales.size(0);
  check_int4_operands(weight, scales, zeros, k, group);
  const int64_t groups = k / group;
  auto y = torch::empty({m_rows, n}, x.options().dtype(torch::kFloat));
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  std::vector<float> xsum(m_rows * groups, 0.f);  // per activation row and group, for the offset term
  for (int64_t g = 0; g < m_rows * groups; ++g)
    for (int64_t j = 0; j < group; ++j) xsum[g] += bf16_to_float(xp[g * group + j]);
  const auto* wp = weight.data_ptr<uint8_t>();
  const auto* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>());
  const uint8_t* zp = zeros.data_ptr<uint8_t>();
  const float* xsp = xsum.data();
  float* yp = y.data_ptr<float>();
  const int64_t chunks_per_group = group / 32;
  at::parallel_for(0, n / kRows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * kRows;
      for (int64_t i = 0; i < m_rows; ++i)
        row_block_dot(xp + i * k, xsp + i * groups, wp + n0 * (k / 2), sp + n0 * groups, zp + n0 * groups,
                      yp + i * n + n0, k, groups, chunks_per_group);
    }
  });
  return y;
}

// The storage format (uint8 [N, ceil(K/2)], column 2c in the low nibble of byte c, 2c+1 in the high) -> the layout
// above for n_pad rows and k_pad columns, padding with q = 8. One output allocation and no temporaries: building
// it from torch ops left ~1.5 GB of freed-but-fragmented heap behind on a 3B model.
torch::Tensor w4_pack(torch::Tensor qweight, int64_t k, int64_t n_pad, int64_t k_pad) {
  TORCH_CHECK(qweight.scalar_type() == torch::kUInt8 && qweight.dim() == 2 && qweight.is_contiguous() &&
              qweight.size(1) == (k + 1) / 2, "qweight: contiguous uint8 [N, ceil(K/2)]");
  const int64_t n = qweight.size(0), in_bytes = qweight.size(1), blocks = k_pad / 128;
  TORCH_CHECK(n_pad >= n && n_pad % kRows == 0 && k_pad >= k && k_pad % 128 == 0, "w4_pack: bad padding");
  auto out = torch::empty({n_pad / kRows, blocks * kRows * 64}, qweight.options());
  const uint8_t* src = qweight.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, n_pad, 16, [&](int64_t begin, int64_t end) {
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
  at::parallel_for(row_begin / kRows, (row_begin + rows) / kRows, 1, [&](int64_t begin, int64_t end) {
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
  at::parallel_for(0, (n + kBf16Rows - 1) / kBf16Rows, 1, [&](int64_t begin, int64_t end) {
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
  const __m256i raw = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));  // bf16 is fp32's high half
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
// and e^f, |f| <= ln2 / 2, by its Taylor polynomial to degree 7 (relative error < 1e-7; scalar expf was 40% of
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
    const int64_t left = head_dim - s * 16;
    masks[s] = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
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
  __m512 sums = _mm512_setzero_ps();
  for (int64_t t = 0; t < length; t += 16) {
    const __mmask16 mask = length - t >= 16 ? static_cast<__mmask16>(0xFFFF)
                                            : static_cast<__mmask16>((1u << (length - t)) - 1);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scores + t), _mm512_set1_ps(best)));
    _mm512_mask_storeu_ps(scores + t, mask, e);
    sums = _mm512_mask_add_ps(sums, mask, sums, e);
  }
  const float total = _mm512_reduce_add_ps(sums);
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
    at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("w4a16_gemv", &w4a16_gemv, "int4 x bf16 GEMV (AVX-512 BF16)");
  m.def("w4_pack", &w4_pack, "int4 storage format -> the GEMV layout");
  m.def("w4_dequantize", &w4_dequantize, "rows of int4 weights of the GEMV layout -> bf16");
  m.def("bf16_gemv", &bf16_gemv, "bf16 x bf16 GEMV in Linear's weight layout");
  m.def("decode_attention", &decode_attention, "attention of one new token over a KV cache");
}
