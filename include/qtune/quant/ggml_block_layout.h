#pragma once
// The bit layouts of ggml's ten quantized block types (ggml-common.h's block_* structs), written once and read by
// dequantize_ggml (quant/gguf_blocks.h), the CPU kernel and the CUDA kernel (kernels/dequant_ggml.h). Plain C++
// over bytes, __host__ __device__ under nvcc, so every path decodes the same way.
//
// Each layout is a struct with:
//   kValues, kBytes         values and bytes per block
//   kPlanes x kLanes        value i = kLanes * p + l; lane l of every plane reads bytes at offset l (plus a per-plane
//                           base), so loops over lanes read contiguous bytes and vectorise
//   kGroup                  consecutive values sharing one scale (and offset)
//   kOffset                 how the offset combines: value = scale * float(code) (+ or -) offset
//   group(x, g, s, o)       the scale and offset of group g, with gguf-py's float32 operations
//   code(x, p, l)           the integer of value kLanes * p + l, already shifted where gguf-py shifts before converting
// Values are then gguf-py's float32 operations in its order, each rounded on its own (the library builds with
// -ffp-contract=off; the CUDA kernel uses __fmul_rn / __fsub_rn), so they equal `gguf.quants.dequantize` bit for bit.
#include <cstdint>
#include <cstring>

#include "qtune/quant/ggml_types.h"

#if defined(__CUDACC__)
#define QTUNE_HD __host__ __device__ __forceinline__
#else
#define QTUNE_HD inline __attribute__((always_inline))
#endif

namespace qtune::quant::layout {

QTUNE_HD uint16_t load_u16(const uint8_t* p) {  // little-endian, any alignment (GGUF data need not be aligned)
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
QTUNE_HD uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// f16 bits to f32, exactly (widening loses nothing). NaN and inf are built from the bits, as numpy does, so a
// signalling NaN keeps its payload; subnormals are mantissa * 2^-24, exact in float32. Branch-free (selects, not
// jumps): random scales put subnormals anywhere, and a mispredicted branch per scale costs more than the rest.
QTUNE_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}
QTUNE_HD float bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}
QTUNE_HD float half_to_float(uint16_t h) {
  const uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
  const uint32_t subnormal = float_bits(static_cast<float>(mantissa) * 5.9604644775390625e-8f);  // 2^-24
  const uint32_t normal = ((exponent == 0x1F ? 0xFFu : exponent + 112u) << 23) | (mantissa << 13);
  return bits_float((static_cast<uint32_t>(h & 0x8000u) << 16) | (exponent == 0 ? subnormal : normal));
}
QTUNE_HD float load_f16(const uint8_t* p) { return half_to_float(load_u16(p)); }

QTUNE_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QTUNE_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QTUNE_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

enum class Offset { None, Add, Subtract };

// One value: the product, then the offset, two roundings (never fused).
template <Offset kOffset>
QTUNE_HD float combine(float scale, float offset, int code) {
  const float product = mul_rn(scale, static_cast<float>(code));
  if constexpr (kOffset == Offset::Add) return add_rn(product, offset);
  else if constexpr (kOffset == Offset::Subtract) return sub_rn(product, offset);
  else return product;
}

// ---- legacy 32-value blocks: one f16 scale d (and min m), 4 or 8 bits per value ----

// block_q4_0 (18 bytes): d, qs[16]; value l (< 16) is the low nibble of qs[l], value l + 16 its high nibble.
// gguf-py: d * (q - 8).
struct Q4_0 {
  static constexpr GgmlType kType = GgmlType::Q4_0;
  static constexpr int kValues = 32, kBytes = 18, kPlanes = 2, kLanes = 16, kGroup = 32;
  static constexpr Offset kOffset = Offset::None;
  QTUNE_HD static void group(const uint8_t* x, int, float& scale, float&) { scale = load_f16(x); }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) { return ((x[2 + l] >> (4 * p)) & 0x0F) - 8; }
};

// block_q4_1 (20 bytes): d, m, qs[16] as in Q4_0; gguf-py: (d * q) + m.
struct Q4_1 {
  static constexpr GgmlType kType = GgmlType::Q4_1;
  static constexpr int kValues = 32, kBytes = 20, kPlanes = 2, kLanes = 16, kGroup = 32;
  static constexpr Offset kOffset = Offset::Add;
  QTUNE_HD static void group(const uint8_t* x, int, float& scale, float& offset) {
    scale = load_f16(x);
    offset = load_f16(x + 2);
  }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) { return (x[4 + l] >> (4 * p)) & 0x0F; }
};

// block_q5_0 (22 bytes): d, qh (uint32: bit i is the fifth bit of value i), qs[16] as in Q4_0; d * (q - 16).
struct Q5_0 {
  static constexpr GgmlType kType = GgmlType::Q5_0;
  static constexpr int kValues = 32, kBytes = 22, kPlanes = 2, kLanes = 16, kGroup = 32;
  static constexpr Offset kOffset = Offset::None;
  QTUNE_HD static void group(const uint8_t* x, int, float& scale, float&) { scale = load_f16(x); }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) {
    const int high = (load_u32(x + 2) >> (16 * p + l)) & 1;
    return (((x[6 + l] >> (4 * p)) & 0x0F) | (high << 4)) - 16;
  }
};

// block_q5_1 (24 bytes): d, m, qh, qs[16]; (d * q) + m.
struct Q5_1 {
  static constexpr GgmlType kType = GgmlType::Q5_1;
  static constexpr int kValues = 32, kBytes = 24, kPlanes = 2, kLanes = 16, kGroup = 32;
  static constexpr Offset kOffset = Offset::Add;
  QTUNE_HD static void group(const uint8_t* x, int, float& scale, float& offset) {
    scale = load_f16(x);
    offset = load_f16(x + 2);
  }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) {
    const int high = (load_u32(x + 4) >> (16 * p + l)) & 1;
    return ((x[8 + l] >> (4 * p)) & 0x0F) | (high << 4);
  }
};

// block_q8_0 (34 bytes): d, qs[32] (int8); gguf-py: q * d (a product: the same float as d * q).
struct Q8_0 {
  static constexpr GgmlType kType = GgmlType::Q8_0;
  static constexpr int kValues = 32, kBytes = 34, kPlanes = 1, kLanes = 32, kGroup = 32;
  static constexpr Offset kOffset = Offset::None;
  QTUNE_HD static void group(const uint8_t* x, int, float& scale, float&) { scale = load_f16(x); }
  QTUNE_HD static int code(const uint8_t* x, int, int l) { return static_cast<int8_t>(x[2 + l]); }
};

// ---- K-quants: 256-value super-blocks of sub-blocks (16 or 32 values) with their own small scales ----
// Planes are the 8 runs of 32 values: in the 2-bit and 6-bit layouts each 128-value half h reads 32 bytes four
// times, 2 bits at a time (plane p = 4h + s takes bits 2s of byte 32h + l).

// block_q2_K (84 bytes): scales[16] (low nibble scale, high nibble min, per 16 values), qs[64], d, dmin.
// gguf-py: dl = d * sc, ml = dmin * m, then dl * q - ml.
struct Q2_K {
  static constexpr GgmlType kType = GgmlType::Q2_K;
  static constexpr int kValues = 256, kBytes = 84, kPlanes = 8, kLanes = 32, kGroup = 16;
  static constexpr Offset kOffset = Offset::Subtract;
  QTUNE_HD static void group(const uint8_t* x, int g, float& scale, float& offset) {
    const uint8_t sc = x[g];
    scale = mul_rn(load_f16(x + 80), static_cast<float>(sc & 0x0F));
    offset = mul_rn(load_f16(x + 82), static_cast<float>(sc >> 4));
  }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) { return (x[16 + 32 * (p / 4) + l] >> (2 * (p % 4))) & 3; }
};

// block_q3_K (110 bytes): hmask[32], qs[64] (low 2 bits, laid out as in Q2_K), scales[12] (16 six-bit scales,
// stored plus 32), d. The high bit of value 32p + l is bit p of hmask[l]; a clear bit subtracts 4.
// gguf-py: dl = d * (scale - 32), then dl * q.
struct Q3_K {
  static constexpr GgmlType kType = GgmlType::Q3_K;
  static constexpr int kValues = 256, kBytes = 110, kPlanes = 8, kLanes = 32, kGroup = 16;
  static constexpr Offset kOffset = Offset::None;
  QTUNE_HD static void group(const uint8_t* x, int g, float& scale, float&) {
    // Scale g: the low nibble of sc[g % 8] (high nibble for g >= 8), and bits 2 * (g / 4) of sc[8 + g % 4] on top.
    const uint8_t* sc = x + 96;
    const int low = (sc[g % 8] >> (4 * (g / 8))) & 0x0F, high = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
    scale = mul_rn(load_f16(x + 108), static_cast<float>((low | (high << 4)) - 32));
  }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) {
    const int low = (x[32 + 32 * (p / 4) + l] >> (2 * (p % 4))) & 3;
    const int hbit = (x[l] >> p) & 1;
    return low - (hbit ? 0 : 4);
  }
};

// The 6-bit scale and min of sub-block j (of 8) in the 12 packed bytes of Q4_K and Q5_K (get_scale_min_k4).
QTUNE_HD void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 0x3F;
    m = q[j + 4] & 0x3F;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// block_q4_K (144 bytes): d, dmin, scales[12], qs[128]; sub-block j (32 values) is the low (j even) or high (j odd)
// nibbles of qs[32 * (j / 2) ...]. gguf-py: (d * sc) * q - (dmin * m).
struct Q4_K {
  static constexpr GgmlType kType = GgmlType::Q4_K;
  static constexpr int kValues = 256, kBytes = 144, kPlanes = 8, kLanes = 32, kGroup = 32;
  static constexpr Offset kOffset = Offset::Subtract;
  QTUNE_HD static void group(const uint8_t* x, int g, float& scale, float& offset) {
    int sc, m;
    scale_min_k4(g, x + 4, sc, m);
    scale = mul_rn(load_f16(x), static_cast<float>(sc));
    offset = mul_rn(load_f16(x + 2), static_cast<float>(m));
  }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) { return (x[16 + 32 * (p / 2) + l] >> (4 * (p % 2))) & 0x0F; }
};

// block_q5_K (176 bytes): d, dmin, scales[12], qh[32], qs[128]; as Q4_K with a fifth bit: bit j of qh[l] for value l
// of sub-block j.
struct Q5_K {
  static constexpr GgmlType kType = GgmlType::Q5_K;
  static constexpr int kValues = 256, kBytes = 176, kPlanes = 8, kLanes = 32, kGroup = 32;
  static constexpr Offset kOffset = Offset::Subtract;
  QTUNE_HD static void group(const uint8_t* x, int g, float& scale, float& offset) { Q4_K::group(x, g, scale, offset); }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) {
    return ((x[48 + 32 * (p / 2) + l] >> (4 * (p % 2))) & 0x0F) | (((x[16 + l] >> p) & 1) << 4);
  }
};

// block_q6_K (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, per 16 values), d.
// In half h = p / 4, run s = p % 4: the low bits are nibble s / 2 of ql[64h + 32 (s % 2) + l], the high bits are bits
// 2s of qh[32h + l]; minus 32. gguf-py: (d * scale) * q.
struct Q6_K {
  static constexpr GgmlType kType = GgmlType::Q6_K;
  static constexpr int kValues = 256, kBytes = 210, kPlanes = 8, kLanes = 32, kGroup = 16;
  static constexpr Offset kOffset = Offset::None;
  QTUNE_HD static void group(const uint8_t* x, int g, float& scale, float&) {
    scale = mul_rn(load_f16(x + 208), static_cast<float>(static_cast<int8_t>(x[192 + g])));
  }
  QTUNE_HD static int code(const uint8_t* x, int p, int l) {
    const int h = p / 4, s = p % 4;
    const int low = (x[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0F;
    const int high = (x[128 + 32 * h + l] >> (2 * s)) & 3;
    return (low | (high << 4)) - 32;
  }
};

// Value i of the block at `x` (the CUDA kernel's form: one thread per value).
template <class B>
QTUNE_HD float block_value(const uint8_t* x, int i) {
  float scale = 0.0f, offset = 0.0f;
  B::group(x, i / B::kGroup, scale, offset);
  return combine<B::kOffset>(scale, offset, B::code(x, i / B::kLanes, i % B::kLanes));
}

// GCC unrolls a 16-lane run completely and then vectorises only parts of the straight-line code: kept a loop, the loop
// vectoriser takes it whole (Q4_0 and Q4_1 dequantize 2-3x faster, measured on x86 with AVX2).
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define QTUNE_KEEP_LOOP _Pragma("GCC unroll 1")
#else
#define QTUNE_KEEP_LOOP
#endif

// Every value of the block at `x`, as out(i, value): the host loops' form. Each inner loop runs over lanes (contiguous
// bytes) under one scale, so the compiler vectorises it; `out` must not write into the block (restrict: without it
// every store would reload the bytes, and the loops stay scalar).
template <class B, class Out>
inline __attribute__((always_inline)) void decode_block(const uint8_t* __restrict x, Out&& out) {
  constexpr int kRun = B::kLanes < B::kGroup ? B::kLanes : B::kGroup;  // lanes under one scale
  for (int p = 0; p < B::kPlanes; ++p)
    for (int c = 0; c < B::kLanes / kRun; ++c) {
      const int first = p * B::kLanes + c * kRun;
      float scale = 0.0f, offset = 0.0f;
      B::group(x, first / B::kGroup, scale, offset);
      QTUNE_KEEP_LOOP
      for (int l = 0; l < kRun; ++l) out(first + l, combine<B::kOffset>(scale, offset, B::code(x, p, c * kRun + l)));
    }
}

// Calls f(B{}) with the layout of `type`; false when the type is not one of the ten.
template <class F>
bool with_layout(GgmlType type, F&& f) {
  switch (type) {
    case GgmlType::Q4_0: f(Q4_0{}); return true;
    case GgmlType::Q4_1: f(Q4_1{}); return true;
    case GgmlType::Q5_0: f(Q5_0{}); return true;
    case GgmlType::Q5_1: f(Q5_1{}); return true;
    case GgmlType::Q8_0: f(Q8_0{}); return true;
    case GgmlType::Q2_K: f(Q2_K{}); return true;
    case GgmlType::Q3_K: f(Q3_K{}); return true;
    case GgmlType::Q4_K: f(Q4_K{}); return true;
    case GgmlType::Q5_K: f(Q5_K{}); return true;
    case GgmlType::Q6_K: f(Q6_K{}); return true;
    default: return false;
  }
}

}  // namespace qtune::quant::layout
