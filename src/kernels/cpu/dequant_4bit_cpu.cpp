// CPU 4-bit dequantization, split across threads by blocks. Within a block every output is one of 16 values,
// code[q] * scale (one fp32 product) rounded to the output type, so both paths below produce exactly those:
//  - x86 with SSSE3 (checked at run time): the 16 values are computed once per block and sliced into one
//    16-byte table per byte of the output type; pshufb then looks up 16 nibbles per instruction. For a
//    4096 x 4096 weight on 2 cores: bf16 output 4.7x, fp32 1.9x faster than the scalar loop, and then bound
//    by memory bandwidth (docs/PERFORMANCE.md).
//  - elsewhere, or with QTUNE_CPU_KERNELS=generic (tests compare the two): a 256-entry table maps each packed
//    byte to its two code values, then two multiplies per byte.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "typed_out.h"
#include "qtune/kernels/dequant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QTUNE_DEQUANT4_SSSE3 1
#include <tmmintrin.h>
#else
#define QTUNE_DEQUANT4_SSSE3 0
#endif

namespace qtune::kernels {
namespace {

template <typename T>
void run_generic(const Dequant4bitParams& p, T* out) {
  std::array<float, 512> pairs;  // byte -> (code[hi], code[lo])
  for (int b = 0; b < 256; ++b) {
    pairs[2 * b] = p.code[b >> 4];
    pairs[2 * b + 1] = p.code[b & 15];
  }
  const int64_t blocks = (p.n + p.blocksize - 1) / p.blocksize;
  // Blocks hold an even number of elements (blocksize >= 32, a power of two), so each byte lies in one block.
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const float scale = block_absmax(p, block);
      const int64_t first = block * p.blocksize;
      const int64_t last = std::min(first + p.blocksize, p.n);
      const int64_t full_pairs = (last - first) / 2;
      const uint8_t* src = p.packed + first / 2;
      T* dst = out + first;
      for (int64_t i = 0; i < full_pairs; ++i) {
        const uint8_t byte = src[i];
        dst[2 * i] = static_cast<T>(pairs[2 * byte] * scale);
        dst[2 * i + 1] = static_cast<T>(pairs[2 * byte + 1] * scale);
      }
      if ((last - first) % 2 != 0) dst[2 * full_pairs] = static_cast<T>(pairs[2 * src[full_pairs]] * scale);
    }
  });
}

#if QTUNE_DEQUANT4_SSSE3
#define QTUNE_SSSE3 __attribute__((target("ssse3")))

// The block's 16 output values, each widened to a 32-bit lane (4 registers of 4): fp32 bits, or the 16-bit
// pattern of the bf16/fp16 value. SSSE3 has no fused multiply-add, so the products round as bitsandbytes'.
template <typename T>
QTUNE_SSSE3 inline void block_values(const float* code, float scale, __m128i (&values)[4]) {
  if constexpr (std::is_same_v<T, c10::Half>) {
    // fp16 rounding is intricate (subnormals, overflow): c10's own conversion, 16 per block.
    alignas(16) uint16_t half[16];
    for (int q = 0; q < 16; ++q) half[q] = static_cast<c10::Half>(code[q] * scale).x;
    for (int j = 0; j < 4; ++j)
      values[j] = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(half + 4 * j)), _mm_setzero_si128());
  } else {
    const __m128 s = _mm_set1_ps(scale);
    for (int j = 0; j < 4; ++j) {
      const __m128 product = _mm_mul_ps(_mm_loadu_ps(code + 4 * j), s);
      if constexpr (std::is_same_v<T, float>) {
        values[j] = _mm_castps_si128(product);
      } else {
        // c10's round_to_nearest_even, four at a time: add 0x7FFF plus the kept lowest bit, keep the top half;
        // NaN becomes 0x7FC0.
        const __m128i bits = _mm_castps_si128(product);
        const __m128i bias = _mm_add_epi32(_mm_and_si128(_mm_srli_epi32(bits, 16), _mm_set1_epi32(1)), _mm_set1_epi32(0x7FFF));
        const __m128i rounded = _mm_srli_epi32(_mm_add_epi32(bits, bias), 16);
        const __m128i nan = _mm_castps_si128(_mm_cmpunord_ps(product, product));
        values[j] = _mm_or_si128(_mm_andnot_si128(nan, rounded), _mm_and_si128(nan, _mm_set1_epi32(0x7FC0)));
      }
    }
  }
}

// Byte k of each of the 16 values, in value order: tables[k] is what pshufb indexes with a nibble.
QTUNE_SSSE3 inline void slice_bytes(const __m128i (&values)[4], __m128i (&tables)[4]) {
  const __m128i by_byte = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m128i a = _mm_shuffle_epi8(values[0], by_byte), b = _mm_shuffle_epi8(values[1], by_byte);
  const __m128i c = _mm_shuffle_epi8(values[2], by_byte), d = _mm_shuffle_epi8(values[3], by_byte);
  const __m128i ab_lo = _mm_unpacklo_epi32(a, b), ab_hi = _mm_unpackhi_epi32(a, b);
  const __m128i cd_lo = _mm_unpacklo_epi32(c, d), cd_hi = _mm_unpackhi_epi32(c, d);
  tables[0] = _mm_unpacklo_epi64(ab_lo, cd_lo);
  tables[1] = _mm_unpackhi_epi64(ab_lo, cd_lo);
  tables[2] = _mm_unpacklo_epi64(ab_hi, cd_hi);
  tables[3] = _mm_unpackhi_epi64(ab_hi, cd_hi);
}

// 16 outputs from 16 nibble indices: look up each byte of the values, then interleave the bytes back.
template <typename T>
QTUNE_SSSE3 inline void lookup16(const __m128i (&tables)[4], __m128i index, T* dst) {
  auto* out = reinterpret_cast<__m128i*>(dst);
  const __m128i b0 = _mm_shuffle_epi8(tables[0], index), b1 = _mm_shuffle_epi8(tables[1], index);
  if constexpr (sizeof(T) == 2) {
    _mm_storeu_si128(out, _mm_unpacklo_epi8(b0, b1));
    _mm_storeu_si128(out + 1, _mm_unpackhi_epi8(b0, b1));
  } else {
    const __m128i b2 = _mm_shuffle_epi8(tables[2], index), b3 = _mm_shuffle_epi8(tables[3], index);
    const __m128i lo01 = _mm_unpacklo_epi8(b0, b1), hi01 = _mm_unpackhi_epi8(b0, b1);
    const __m128i lo23 = _mm_unpacklo_epi8(b2, b3), hi23 = _mm_unpackhi_epi8(b2, b3);
    _mm_storeu_si128(out, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(hi01, hi23));
  }
}

template <typename T>
QTUNE_SSSE3 void blocks_ssse3(const Dequant4bitParams& p, T* out, int64_t begin, int64_t end) {
  const __m128i low_nibble = _mm_set1_epi8(0x0F);
  for (int64_t block = begin; block < end; ++block) {
    const float scale = block_absmax(p, block);
    __m128i values[4], tables[4];
    block_values<T>(p.code, scale, values);
    slice_bytes(values, tables);
    const int64_t first = block * p.blocksize;
    const int64_t count = std::min(p.blocksize, p.n - first);
    const uint8_t* src = p.packed + first / 2;
    T* dst = out + first;
    int64_t i = 0;
    // 32 outputs from 16 packed bytes; a full block (a power of two >= 32) has no remainder.
    for (; i + 32 <= count; i += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i / 2));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibble);
      const __m128i lo = _mm_and_si128(bytes, low_nibble);
      // Element 2k is byte k's high nibble, element 2k + 1 its low one.
      lookup16(tables, _mm_unpacklo_epi8(hi, lo), dst + i);
      lookup16(tables, _mm_unpackhi_epi8(hi, lo), dst + i + 16);
    }
    for (; i < count; ++i) {  // the tail of the last, partial block
      const uint8_t byte = src[i / 2];
      dst[i] = static_cast<T>(p.code[i % 2 == 0 ? byte >> 4 : byte & 15] * scale);
    }
  }
}

// Plain stores: non-temporal (streaming) ones, measured for 4096 x 4096 outputs on the 2-core development VM,
// made bf16 slower (2.7 -> 3.5 ms) and fp32 hardly faster (docs/PERFORMANCE.md), and would evict a small output
// the next matmul is about to read.
template <typename T>
void run_ssse3(const Dequant4bitParams& p, T* out) {
  const int64_t blocks = (p.n + p.blocksize - 1) / p.blocksize;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) { blocks_ssse3(p, out, begin, end); });
}

bool use_ssse3() {
  static const bool supported = __builtin_cpu_supports("ssse3");
  const char* choice = std::getenv("QTUNE_CPU_KERNELS");
  return supported && !(choice != nullptr && std::strcmp(choice, "generic") == 0);
}
#endif

template <typename T>
void run(const Dequant4bitParams& p, T* out) {
#if QTUNE_DEQUANT4_SSSE3
  if (use_ssse3()) return run_ssse3(p, out);
#endif
  run_generic(p, out);
}

}  // namespace

void dequantize_4bit_cpu(const Dequant4bitParams& params, at::Tensor& out) {
  with_typed_out(out, [&](auto* dst) { run(params, dst); });
}

}  // namespace qtune::kernels
