#include "qtune/quant/gguf_quantize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "qtune/util/error.h"

// Ports of ggml-quants.c's quantizers (llama.cpp, the version vendored by llama-cpp-python 0.3.36), one function per
// ggml function, named after it. Byte-identical output needs ggml's float32 expressions in ggml's order: every
// expression below is copied as ggml writes it, so C's and C++'s identical promotions (int to float) and evaluation
// order apply. No fused multiply-adds: the library builds with -std=c++17 (ISO mode, whose default is
// -ffp-contract=off) and passes -ffp-contract=off explicitly (CMakeLists.txt); ggml-base itself is built for baseline
// x86-64, which has no FMA. The block layouts are ggml-common.h's block_* structs, written little-endian.
namespace qtune::quant {
namespace {

constexpr int QK = 32;     // values per block of the legacy types (QK4_0, QK8_0, ...)
constexpr int QK_K = 256;  // values per super-block of the K-quants
constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS: below it a group counts as all zero

// ---- scalar conversions ----

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ggml_compute_fp32_to_fp16 (ggml-impl.h): round to nearest even by letting the FPU round a scaled sum; NaN becomes
// the quiet 0x7E00 with its sign (numpy would keep the payload instead).
uint16_t fp32_to_fp16(float f) {
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = bits_of(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & UINT32_C(0x80000000);
  uint32_t bias = shl1_w & UINT32_C(0xFF000000);
  if (bias < UINT32_C(0x71000000)) bias = UINT32_C(0x71000000);
  base = float_of((bias >> 1) + UINT32_C(0x07800000)) + base;
  const uint32_t bits = bits_of(base);
  const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
  const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT32_C(0x7E00) : nonsign));
}

// ggml_compute_fp16_to_fp32 (ggml-impl.h); exact for every half.
float fp16_to_fp32(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & UINT32_C(0x80000000);
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = UINT32_C(0xE0) << 23;
  const float exp_scale = 0x1.0p-112f;
  const float normalized_value = float_of((two_w >> 4) + exp_offset) * exp_scale;
  const uint32_t magic_mask = UINT32_C(126) << 23;
  const float magic_bias = 0.5f;
  const float denormalized_value = float_of((two_w >> 17) | magic_mask) - magic_bias;
  const uint32_t denormalized_cutoff = UINT32_C(1) << 27;
  return float_of(sign | (two_w < denormalized_cutoff ? bits_of(denormalized_value) : bits_of(normalized_value)));
}

// ggml_compute_fp32_to_bf16 (ggml-impl.h): round to nearest even; NaNs quieted, keeping their top payload bits.
uint16_t fp32_to_bf16(float s) {
  const uint32_t u = bits_of(s);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

// nearest_int (ggml-quants.c): round half to even through the mantissa of fval + 1.5 * 2^23. Kept as the bit trick,
// not lrintf, so out-of-range and NaN inputs give ggml's (meaningless but deterministic) codes too.
int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

// C's (int8_t)f and (uint8_t)f in the legacy reference quantizers, as GCC compiles them for x86-64: cvttss2si into
// a 32-bit register (0x80000000 for NaN and out-of-range values, which a subnormal scale's infinite inverse
// produces), then the low byte. A plain static_cast would be undefined there.
int32_t truncate_x86(float f) {
  if (f >= -2147483648.f && f < 2147483648.f) return static_cast<int32_t>(f);
  return INT32_MIN;
}
int8_t to_int8(float f) { return static_cast<int8_t>(static_cast<uint8_t>(truncate_x86(f) & 0xFF)); }
uint8_t to_uint8(float f) { return static_cast<uint8_t>(truncate_x86(f) & 0xFF); }

void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void store_u32(uint8_t* p, uint32_t v) {
  for (int b = 0; b < 4; ++b) p[b] = static_cast<uint8_t>(v >> (8 * b));
}

// The value of largest magnitude among qk values (the first one on ties), as quantize_row_q4_0_ref / q5_0 and
// make_qx_quants / make_q3_quants pick it.
float signed_absmax(const float* x, int qk) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < qk; j++) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  return max;
}

// ---- the scale searches ggml's quantizers share ----
// __restrict as ggml's GGML_RESTRICT: the int8/uint8 code arrays could otherwise alias the floats, which makes every
// code store reload x (about 20% of the time). It changes no arithmetic.

// make_qx_quants with rmse_type 1 (the only one its callers here use): a symmetric scale for n values into codes
// L in [0, 2 nmax), refined over 18 trial scales by the weighted least-squares fit; weights qw, or x^2 without them.
float make_qx_quants(int n, int nmax, const float* __restrict x, int8_t* __restrict L, const float* __restrict qw) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_q3_quants with do_rmse (Q3_K's reference): a symmetric scale, then up to 5 rounds of moving single codes
// while the x^2-weighted fit improves.
float make_q3_quants(int n, int nmax, const float* __restrict x, int8_t* __restrict L) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l);
    float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// make_qkx2_quants (the K-quant references) and make_qkx3_quants (the importance-weighted paths): a scale and a
// non-positive min for codes in [0, nmax], trying nstep + 1 inverse scales (rmin + rdelta * is + nmax) / range and
// keeping the weighted least-squares (scale, min) of the best one. They differ only in the degenerate-range test
// (max == min against max <= min); qkx3's x^2 default weights are never used here, every caller passes weights.
float make_qkx_quants(bool qkx3, int n, int nmax, const float* __restrict x, const float* __restrict weights,
                      uint8_t* __restrict L, float* __restrict the_min, uint8_t* __restrict Laux, float rmin,
                      float rdelta, int nstep, bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (qkx3 ? max <= min : max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    float w = weights[i];
    best_error += w * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        float w = weights[i];
        cur_error += w * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qp_quants: codes in [0, nmax] for n non-negative values (the sub-block scales and mins of the weighted
// K-quants), best of 9 trial scales by weighted squared error, then up to 5 rounds of single-code moves.
float make_qp_quants(int n, int nmax, const float* __restrict x, uint8_t* __restrict L,
                     const float* __restrict quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    float diff = x[i] - scale * L[i];
    float w = quant_weights[i];
    best_mse += w * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    float iscale_is = (0.1f * is + nmax) / max;
    float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale_is * x[i]);
      l = std::min(nmax, l);
      float diff = x[i] - scale_is * l;
      float w = quant_weights[i];
      mse += w * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::min(nmax, l);
    L[i] = static_cast<uint8_t>(l);
    float w = quant_weights[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float w = quant_weights[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::min(nmax, new_l);
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Sum of x^2 over n values, in index order (the row and super-block energies of the weighted paths).
float sum_squares(const float* x, int64_t n) {
  float s = 0;
  for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

// ---- plain types (ggml_quantize_chunk's F32 / F16 / BF16 cases) ----

void quantize_row_f32(const float* x, uint8_t* y, int64_t n) { std::memcpy(y, x, n * sizeof(float)); }

void quantize_row_f16(const float* x, uint8_t* y, int64_t n) {  // ggml_fp32_to_fp16_row
  for (int64_t i = 0; i < n; ++i) store_u16(y + 2 * i, fp32_to_fp16(x[i]));
}

void quantize_row_bf16(const float* x, uint8_t* y, int64_t n) {  // ggml_fp32_to_bf16_row_ref
  for (int64_t i = 0; i < n; ++i) store_u16(y + 2 * i, fp32_to_bf16(x[i]));
}

// ---- legacy 32-value blocks: references ----

// quantize_row_q4_0_ref. block_q4_0: d, qs[16] (value j in the low nibble of qs[j], value j + 16 in its high one).
void quantize_row_q4_0_ref(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / QK; i++, x += QK, y += 18) {
    const float max = signed_absmax(x, QK);
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < QK / 2; ++j) {
      const float x0 = x[0 + j] * id;
      const float x1 = x[QK / 2 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(to_int8(x0 + 8.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(to_int8(x1 + 8.5f))));
      y[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

// The least and greatest of qk values (quantize_row_q4_1_ref / q5_1).
void min_max(const float* x, int qk, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < qk; j++) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
}

// quantize_row_q4_1_ref. block_q4_1: d, m, qs[16].
void quantize_row_q4_1_ref(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / QK; i++, x += QK, y += 20) {
    float min, max;
    min_max(x, QK, min, max);
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(min));
    for (int j = 0; j < QK / 2; ++j) {
      const float x0 = (x[0 + j] - min) * id;
      const float x1 = (x[QK / 2 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(to_int8(x0 + 0.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(to_int8(x1 + 0.5f))));
      y[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

// Packs 32 five-bit codes as block_q5_0 / q5_1 hold them: low nibbles in qs[16] (as Q4_0), fifth bits in qh
// (bit j for value j).
void pack_q5(const uint8_t* codes, uint8_t* qh_out, uint8_t* qs) {
  uint32_t qh = 0;
  for (int j = 0; j < QK / 2; ++j) {
    const uint8_t xi0 = codes[j];
    const uint8_t xi1 = codes[j + QK / 2];
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
  }
  store_u32(qh_out, qh);
}

// quantize_row_q5_0_ref. block_q5_0: d, qh, qs[16].
void quantize_row_q5_0_ref(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / QK; i++, x += QK, y += 22) {
    const float max = signed_absmax(x, QK);
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    uint8_t codes[QK];
    for (int j = 0; j < QK; ++j)
      codes[j] = static_cast<uint8_t>(std::min(31, static_cast<int>(to_int8(x[j] * id + 16.5f))));
    pack_q5(codes, y + 2, y + 6);
  }
}

// quantize_row_q5_1_ref. block_q5_1: d, m, qh, qs[16].
void quantize_row_q5_1_ref(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / QK; i++, x += QK, y += 24) {
    float min, max;
    min_max(x, QK, min, max);
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(min));
    uint8_t codes[QK];
    for (int j = 0; j < QK; ++j) codes[j] = to_uint8((x[j] - min) * id + 0.5f);
    pack_q5(codes, y + 4, y + 8);
  }
}

// quantize_row_q8_0_ref. block_q8_0: d, qs[32] (int8). ggml_quantize_chunk uses it with or without an imatrix.
void quantize_row_q8_0_ref(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / QK; i++, x += QK, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < QK; ++j) y[2 + j] = static_cast<uint8_t>(to_int8(std::round(x[j] * id)));
  }
}

// ---- legacy 32-value blocks: importance-weighted (quantize_row_q*_impl) ----

// The weights of ggml's legacy *_impl paths for one block: imatrix times sqrt(sigma2 + x^2), sigma2 being the
// row's mean square.
void legacy_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  for (int j = 0; j < QK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

float row_sigma2(const float* x, int64_t n_per_row) { return sum_squares(x, n_per_row) / n_per_row; }

// quantize_row_q4_0_impl.
void quantize_row_q4_0_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n_per_row);
  float weight[QK];
  int8_t L[QK];
  for (int64_t ib = 0; ib < n_per_row / QK; ++ib, y += 18) {
    const float* xb = x + QK * ib;
    legacy_weights(xb, quant_weights + QK * ib, sigma2, weight);
    const float d = make_qx_quants(QK, 8, xb, L, weight);
    store_u16(y, fp32_to_fp16(d));
    for (int j = 0; j < 16; ++j) y[2 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

// quantize_row_q4_1_impl.
void quantize_row_q4_1_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n_per_row);
  float weight[QK];
  uint8_t L[QK], Laux[QK];
  for (int64_t ib = 0; ib < n_per_row / QK; ++ib, y += 20) {
    const float* xb = x + QK * ib;
    legacy_weights(xb, quant_weights + QK * ib, sigma2, weight);
    float min;
    const float d = make_qkx_quants(true, QK, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(-min));
    for (int j = 0; j < 16; ++j) y[4 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

// quantize_row_q5_0_impl.
void quantize_row_q5_0_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n_per_row);
  float weight[QK];
  int8_t L[QK];
  for (int64_t ib = 0; ib < n_per_row / QK; ++ib, y += 22) {
    const float* xb = x + QK * ib;
    legacy_weights(xb, quant_weights + QK * ib, sigma2, weight);
    const float d = make_qx_quants(QK, 16, xb, L, weight);
    store_u16(y, fp32_to_fp16(d));
    uint8_t codes[QK];
    for (int j = 0; j < QK; ++j) codes[j] = static_cast<uint8_t>(L[j]);
    pack_q5(codes, y + 2, y + 6);
  }
}

// quantize_row_q5_1_impl.
void quantize_row_q5_1_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  const float sigma2 = row_sigma2(x, n_per_row);
  float weight[QK];
  uint8_t L[QK], Laux[QK];
  for (int64_t ib = 0; ib < n_per_row / QK; ++ib, y += 24) {
    const float* xb = x + QK * ib;
    legacy_weights(xb, quant_weights + QK * ib, sigma2, weight);
    float min;
    const float d = make_qkx_quants(true, QK, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
    store_u16(y, fp32_to_fp16(d));
    store_u16(y + 2, fp32_to_fp16(-min));
    pack_q5(L, y + 4, y + 8);
  }
}

// ---- K-quants: shared packing ----

// Two-bit codes L[256] into qs[64] as block_q2_K / q3_K store them: each 128-value half in 32 bytes, value
// j + 32 s of the half at bits 2 s of byte j.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < QK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// The 8 six-bit scales and mins of Q4_K / Q5_K into 12 bytes (ggml's inline packing; get_scale_min_k4 reverses it).
void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < QK_K / 32; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales[j - 0] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// The final codes of Q4_K / Q5_K against the stored (fp16) d, dmin and six-bit scales, as both paths recompute them.
void requantize_k4(const float* x, const uint8_t* scales, uint16_t d_bits, uint16_t dmin_bits, int nmax, uint8_t* L) {
  uint8_t sc, m;
  for (int j = 0; j < QK_K / 32; ++j) {
    get_scale_min_k4(j, scales, &sc, &m);
    const float d = fp16_to_fp32(d_bits) * sc;
    if (!d) continue;
    const float dm = fp16_to_fp32(dmin_bits) * m;
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      l = std::max(0, std::min(nmax, l));
      L[32 * j + ii] = static_cast<uint8_t>(l);
    }
  }
}

// Q4_K/Q5_K references: the 6-bit codes of the 8 sub-block scales and mins against their maxima (quantize_row_q4_K_ref
// and q5_K_ref, identical there), packed, and d / dmin.
void quantize_scale_min_k4_ref(const float* scales_f, const float* mins_f, uint8_t* scales, uint16_t& d_bits,
                               uint16_t& dmin_bits) {
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < QK_K / 32; ++j) {
    if (scales_f[j] > max_scale) max_scale = scales_f[j];
    if (mins_f[j] > max_min) max_min = mins_f[j];
  }
  float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[QK_K / 32], lm[QK_K / 32];
  for (int j = 0; j < QK_K / 32; ++j) {
    ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales_f[j])));
    lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins_f[j])));
  }
  pack_scale_min_k4(ls, lm, scales);
  d_bits = fp32_to_fp16(max_scale / 63.f);
  dmin_bits = fp32_to_fp16(max_min / 63.f);
}

// The 8 sub-block (scale, min) searches of the Q4_K/Q5_K references: make_qkx2_quants weighted by
// rms(sub-block) + |x|.
void sub_block_scale_min_ref(const float* x, int nmax, float rmin, int nstep, uint8_t* L, float* scales,
                             float* mins) {
  uint8_t Laux[32];
  float weights[32];
  for (int j = 0; j < QK_K / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx_quants(false, 32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep,
                                false);
  }
}

// The weighted counterpart (quantize_row_q4_K_impl / q5_K_impl with an imatrix): make_qkx3_quants weighted by
// imatrix * sqrt(sigma2 + x^2), then make_qp_quants codes the scales and mins weighted by each sub-block's total.
// `clamp_63`: quantize_row_q5_K_impl clamps the codes to 63, q4_K_impl does not; make_qp_quants caps them at 63
// already, but a negative code would wrap in the uint8 (and then differ between the two).
void sub_block_scale_min_impl(const float* x, const float* qw, int nmax, bool clamp_63, uint8_t* L, uint8_t* scales,
                              uint16_t& d_bits, uint16_t& dmin_bits) {
  uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
  float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales_f[QK_K / 32];
  float sum_x2 = sum_squares(x, QK_K);
  float sigma2 = 2 * sum_x2 / QK_K;
  for (int j = 0; j < QK_K / 32; ++j) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales_f[j] = make_qkx_quants(true, 32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                  false);
  }
  float d_block = make_qp_quants(QK_K / 32, 63, scales_f, Ls, sw);
  float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
  if (clamp_63) {
    for (int j = 0; j < QK_K / 32; ++j) {
      Ls[j] = std::min<uint8_t>(63, Ls[j]);
      Lm[j] = std::min<uint8_t>(63, Lm[j]);
    }
  }
  pack_scale_min_k4(Ls, Lm, scales);
  d_bits = fp32_to_fp16(d_block);
  dmin_bits = fp32_to_fp16(m_block);
}

// ---- Q4_K: block_q4_K (144 bytes): d, dmin, scales[12], qs[128] ----

// Sub-blocks 2 k and 2 k + 1 share qs[32 k ..]: low and high nibbles.
void write_q4_K(const uint8_t* L, const uint8_t* scales, uint16_t d_bits, uint16_t dmin_bits, uint8_t* y) {
  store_u16(y, d_bits);
  store_u16(y + 2, dmin_bits);
  std::memcpy(y + 4, scales, 12);
  uint8_t* q = y + 16;
  for (int j = 0; j < QK_K; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

// ---- Q5_K: block_q5_K (176 bytes): d, dmin, scales[12], qh[32], qs[128] ----

// As Q4_K, plus the fifth bits: for sub-block j, bit j of qh[l] for its value l.
void write_q5_K(const uint8_t* L, const uint8_t* scales, uint16_t d_bits, uint16_t dmin_bits, uint8_t* y) {
  store_u16(y, d_bits);
  store_u16(y + 2, dmin_bits);
  std::memcpy(y + 4, scales, 12);
  uint8_t* qh = y + 16;
  uint8_t* ql = y + 48;
  std::memset(qh, 0, QK_K / 8);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < QK_K; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
    ql += 32;
  }
}

// Q4_K and Q5_K quantize alike (ggml's quantize_row_q4_K_ref/_impl and quantize_row_q5_K_ref/_impl): per 32-value
// sub-block a scale and a min (make_qkx2_quants, or make_qkx3_quants with the importance matrix), the scales and mins
// to 6 bits under the block's d and dmin, then the values again under those. NMAX = 15 or 31 levels; the reference
// search's rmin and steps differ with it.
struct K4Family {
  int nmax;
  float rmin;
  int nstep;
  int64_t block_bytes;
  void (*write)(const uint8_t*, const uint8_t*, uint16_t, uint16_t, uint8_t*);
};
constexpr K4Family kQ4K{15, -1.f, 20, 144, write_q4_K};
constexpr K4Family kQ5K{31, -0.5f, 15, 176, write_q5_K};

void quantize_k4_family(const K4Family& f, const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  for (int64_t i = 0; i < n_per_row / QK_K; i++, x += QK_K, y += f.block_bytes) {
    uint8_t L[QK_K], scales[12];
    uint16_t d_bits, dmin_bits;
    if (quant_weights) {
      sub_block_scale_min_impl(x, quant_weights + QK_K * i, f.nmax, f.nmax == 31, L, scales, d_bits, dmin_bits);
    } else {
      float mins[QK_K / 32], scales_f[QK_K / 32];
      sub_block_scale_min_ref(x, f.nmax, f.rmin, f.nstep, L, scales_f, mins);
      quantize_scale_min_k4_ref(scales_f, mins, scales, d_bits, dmin_bits);
    }
    requantize_k4(x, scales, d_bits, dmin_bits, f.nmax, L);
    f.write(L, scales, d_bits, dmin_bits, y);
  }
}
void quantize_row_q4_K_ref(const float* x, uint8_t* y, int64_t k) { quantize_k4_family(kQ4K, x, y, k, nullptr); }
void quantize_row_q4_K_impl(const float* x, uint8_t* y, int64_t n, const float* w) {
  quantize_k4_family(kQ4K, x, y, n, w);
}
void quantize_row_q5_K_ref(const float* x, uint8_t* y, int64_t k) { quantize_k4_family(kQ5K, x, y, k, nullptr); }
void quantize_row_q5_K_impl(const float* x, uint8_t* y, int64_t n, const float* w) {
  quantize_k4_family(kQ5K, x, y, n, w);
}

// ---- Q6_K: block_q6_K (210 bytes): ql[128], qh[64], scales[16] (int8), d ----

// quantize_row_q6_K_ref and _impl in one (they differ only in make_qx_quants' weights: x^2, or the imatrix itself).
void quantize_q6_K_blocks(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  for (int64_t i = 0; i < n_per_row / QK_K; i++, x += QK_K, y += 210) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
      const float* qw = quant_weights ? quant_weights + QK_K * i + 16 * ib : nullptr;
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(y, 0, 210);  // and d = fp16(0) = 0
      continue;
    }
    float iscale = -128.f / max_scale;
    const uint16_t d_bits = fp32_to_fp16(1 / iscale);
    int8_t sc[QK_K / 16];
    for (int ib = 0; ib < QK_K / 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < QK_K / 16; ++j) {
      float d = fp16_to_fp32(d_bits) * sc[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
    }
    std::memcpy(y + 192, sc, 16);
    store_u16(y + 208, d_bits);
  }
}

void quantize_row_q6_K_ref(const float* x, uint8_t* y, int64_t k) { quantize_q6_K_blocks(x, y, k, nullptr); }
void quantize_row_q6_K_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  quantize_q6_K_blocks(x, y, n_per_row, qw);
}

// ---- Q3_K: block_q3_K (110 bytes): hmask[32], qs[64], scales[12], d ----

// The 16 six-bit scale codes l (0..63, 32 meaning zero) into 12 bytes: low nibbles in scales[0..7] (j >= 8 in the
// high nibble of j - 8), the two high bits of j at bits 2 (j / 4) of scales[8 + j % 4].
void pack_scales_q3_K(const int* l6, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < QK_K / 16; ++j) {
    int l = l6[j];
    if (j < 8) {
      scales[j] = static_cast<uint8_t>(l & 0xF);
    } else {
      scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
    }
    l >>= 4;
    scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
  }
}

// Final codes against the stored scales and d, the high bits split off into hmask (bit s of hmask[m] for value
// 32 s + m), the rest packed as Q2_K's (quantize_row_q3_K_ref and _impl share this tail).
void write_q3_K(const float* x, int8_t* L, const uint8_t* scales, uint16_t d_bits, uint8_t* y) {
  for (int j = 0; j < QK_K / 16; ++j) {
    int8_t sc = static_cast<int8_t>(j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4);
    sc = static_cast<int8_t>((sc | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    float d = fp16_to_fp32(d_bits) * sc;
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      l = std::max(-4, std::min(3, l));
      L[16 * j + ii] = static_cast<int8_t>(l + 4);
    }
  }
  uint8_t* hmask = y;
  std::memset(hmask, 0, QK_K / 8);
  int m = 0;
  uint8_t hm = 1;
  uint8_t codes[QK_K];
  for (int j = 0; j < QK_K; ++j) {
    if (L[j] > 3) {
      hmask[m] |= hm;
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
    codes[j] = static_cast<uint8_t>(L[j]);
    if (++m == QK_K / 8) {
      m = 0;
      hm = static_cast<uint8_t>(hm << 1);
    }
  }
  pack_2bit(codes, y + 32);
  std::memcpy(y + 96, scales, 12);
  store_u16(y + 108, d_bits);
}

void quantize_row_q3_K_ref(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / QK_K; i++, x += QK_K, y += 110) {
    int8_t L[QK_K];
    float scales_f[QK_K / 16];
    float max_scale = 0;
    float amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
      scales_f[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      float scale = std::fabs(scales_f[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales_f[j];
      }
    }
    uint8_t scales[12] = {};
    uint16_t d_bits = fp32_to_fp16(0.f);
    if (max_scale) {
      float iscale = -32.f / max_scale;
      int l6[QK_K / 16];
      for (int j = 0; j < QK_K / 16; ++j) {
        int8_t l = static_cast<int8_t>(nearest_int(iscale * scales_f[j]));
        l6[j] = std::max(-32, std::min(31, static_cast<int>(l))) + 32;
      }
      pack_scales_q3_K(l6, scales);
      d_bits = fp32_to_fp16(1 / iscale);
    }
    write_q3_K(x, L, scales, d_bits, y);
  }
}

void quantize_row_q3_K_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  for (int64_t i = 0; i < n_per_row / QK_K; i++, x += QK_K, y += 110) {
    int8_t L[QK_K];
    float scales_f[QK_K / 16], weight[16], sw[QK_K / 16];
    int8_t Ls[QK_K / 16];
    float sumx2 = sum_squares(x, QK_K);
    float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
      const float* qw = quant_weights + QK_K * i + 16 * j;
      for (int l = 0; l < 16; ++l) weight[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales_f[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    float d_block = make_qx_quants(QK_K / 16, 32, scales_f, Ls, sw);
    int l6[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j) l6[j] = Ls[j];
    uint8_t scales[12];
    pack_scales_q3_K(l6, scales);
    write_q3_K(x, L, scales, fp32_to_fp16(d_block), y);
  }
}

// ---- Q2_K: block_q2_K (84 bytes): scales[16] (scale code low nibble, min code high), qs[64], d, dmin ----

// Final codes against the stored 4-bit scales and mins (both Q2_K paths), then the block.
void write_q2_K(const float* x, uint8_t* L, const uint8_t* scales, uint16_t d_bits, uint16_t dmin_bits, uint8_t* y) {
  for (int j = 0; j < QK_K / 16; ++j) {
    const float d = fp16_to_fp32(d_bits) * (scales[j] & 0xF);
    if (!d) continue;
    const float dm = fp16_to_fp32(dmin_bits) * (scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int((x[16 * j + ii] + dm) / d);
      l = std::max(0, std::min(3, l));
      L[16 * j + ii] = static_cast<uint8_t>(l);
    }
  }
  std::memcpy(y, scales, 16);
  pack_2bit(L, y + 16);
  store_u16(y + 80, d_bits);
  store_u16(y + 82, dmin_bits);
}

void quantize_row_q2_K_ref(const float* x, uint8_t* y, int64_t k) {
  const float q4scale = 15.f;
  for (int64_t i = 0; i < k / QK_K; i++, x += QK_K, y += 84) {
    uint8_t L[QK_K], Laux[16], scales[QK_K / 16];
    float weights[16], mins[QK_K / 16], scales_f[QK_K / 16];
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales_f[j] = make_qkx_quants(false, 16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                    true);
      float scale = scales_f[j];
      if (scale > max_scale) max_scale = scale;
      float min = mins[j];
      if (min > max_min) max_min = min;
    }
    uint16_t d_bits, dmin_bits;
    if (max_scale > 0) {
      float iscale = q4scale / max_scale;
      for (int j = 0; j < QK_K / 16; ++j) scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales_f[j]));
      d_bits = fp32_to_fp16(max_scale / q4scale);
    } else {
      for (int j = 0; j < QK_K / 16; ++j) scales[j] = 0;
      d_bits = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
      float iscale = q4scale / max_min;
      for (int j = 0; j < QK_K / 16; ++j) scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
      dmin_bits = fp32_to_fp16(max_min / q4scale);
    } else {
      dmin_bits = fp32_to_fp16(0.f);
    }
    write_q2_K(x, L, scales, d_bits, dmin_bits, y);
  }
}

void quantize_row_q2_K_impl(const float* x, uint8_t* y, int64_t n_per_row, const float* quant_weights) {
  for (int64_t i = 0; i < n_per_row / QK_K; i++, x += QK_K, y += 84) {
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16], scales[QK_K / 16];
    float mins[QK_K / 16], scales_f[QK_K / 16], sw[QK_K / 16] = {}, weight[16];
    float sumx2 = sum_squares(x, QK_K);
    float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
      const float* qw = quant_weights + QK_K * i + 16 * j;
      for (int l = 0; l < 16; ++l) weight[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < QK_K / 16; ++l) sw[j] += weight[l];
      scales_f[j] = make_qkx_quants(true, 16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                    false);
    }
    float dm = make_qp_quants(QK_K / 16, 15, scales_f, Ls, sw);
    float mm = make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    for (int j = 0; j < QK_K / 16; ++j) scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    write_q2_K(x, L, scales, fp32_to_fp16(dm), fp32_to_fp16(mm), y);
  }
}

// ---- dispatch ----

using RefRow = void (*)(const float* x, uint8_t* y, int64_t n);
using WeightedRow = void (*)(const float* x, uint8_t* y, int64_t n, const float* importance);

struct Quantizer {
  GgmlType type;
  RefRow ref;            // quantize_row_*_ref: ggml_quantize_chunk without an imatrix
  WeightedRow weighted;  // quantize_row_*_impl with one; nullptr where ggml ignores the imatrix
};

constexpr Quantizer kQuantizers[] = {
    {GgmlType::F32, quantize_row_f32, nullptr},
    {GgmlType::F16, quantize_row_f16, nullptr},
    {GgmlType::BF16, quantize_row_bf16, nullptr},
    {GgmlType::Q4_0, quantize_row_q4_0_ref, quantize_row_q4_0_impl},
    {GgmlType::Q4_1, quantize_row_q4_1_ref, quantize_row_q4_1_impl},
    {GgmlType::Q5_0, quantize_row_q5_0_ref, quantize_row_q5_0_impl},
    {GgmlType::Q5_1, quantize_row_q5_1_ref, quantize_row_q5_1_impl},
    {GgmlType::Q8_0, quantize_row_q8_0_ref, nullptr},  // quantize_q8_0: "(void)quant_weights; // not used"
    {GgmlType::Q2_K, quantize_row_q2_K_ref, quantize_row_q2_K_impl},
    {GgmlType::Q3_K, quantize_row_q3_K_ref, quantize_row_q3_K_impl},
    {GgmlType::Q4_K, quantize_row_q4_K_ref, quantize_row_q4_K_impl},
    {GgmlType::Q5_K, quantize_row_q5_K_ref, quantize_row_q5_K_impl},
    {GgmlType::Q6_K, quantize_row_q6_K_ref, quantize_row_q6_K_impl},
};

const Quantizer* quantizer_of(GgmlType type) {
  for (const auto& q : kQuantizers)
    if (q.type == type) return &q;
  return nullptr;
}

std::string quantizable_names() {
  std::string names;
  for (const auto& q : kQuantizers) names += (names.empty() ? "" : ", ") + std::string(ggml_type_info(q.type).name);
  return names;
}

}  // namespace

bool ggml_quantizable(GgmlType type) { return quantizer_of(type) != nullptr; }

std::vector<uint8_t> quantize_ggml(GgmlType type, const float* values, int64_t rows, int64_t row_elems,
                                   const float* importance) {
  const auto& info = ggml_type_info(type);
  const Quantizer* q = quantizer_of(type);
  if (!q)
    fail("quantize_ggml: qtune cannot quantize to ggml type {} ({}); it can: {}", info.name,
         static_cast<uint32_t>(type), quantizable_names());
  if (rows < 0) fail("quantize_ggml: {} row count must be >= 0, got {}", info.name, rows);
  if (row_elems % info.block_elems != 0)
    fail("quantize_ggml: {} stores values in blocks of {}, but a row has {} values (not a whole number of blocks)",
         info.name, info.block_elems, row_elems);
  const int64_t row_bytes = static_cast<int64_t>(ggml_nbytes(type, row_elems));  // also rejects row_elems < 0
  if (rows > 0 && row_elems > 0 && !values) fail("quantize_ggml: {} values are null", info.name);
  if (importance) {
    for (int64_t j = 0; j < row_elems; ++j)
      if (!(importance[j] >= 0.0f) || !std::isfinite(importance[j]))
        fail("quantize_ggml: importance weights must be finite and >= 0, got {} at column {}", importance[j], j);
  }
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  if (out.empty()) return out;
  // Rows are independent in ggml too (the weighted paths see one row's statistics, the references one block's).
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, row_elems));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* x = values + r * row_elems;
      uint8_t* y = out.data() + r * row_bytes;
      if (importance && q->weighted)
        q->weighted(x, y, row_elems, importance);
      else
        q->ref(x, y, row_elems);
    }
  });
  return out;
}

at::Tensor quantize_ggml(GgmlType type, const at::Tensor& values, const at::Tensor& importance) {
  const auto& info = ggml_type_info(type);
  if (!values.defined() || values.dim() != 2 || !values.is_floating_point())
    fail("quantize_ggml: {} values must be a floating tensor [rows, row_elems], got {}", info.name,
         values.defined() ? values.toString() + " of shape " + c10::str(values.sizes()) : std::string("undefined"));
  const auto x = values.to(at::kCPU, at::kFloat).contiguous();
  const int64_t rows = x.size(0), row_elems = x.size(1);
  at::Tensor w;
  if (importance.defined()) {
    if (importance.dim() != 1 || importance.size(0) != row_elems || !importance.is_floating_point())
      fail("quantize_ggml: {} importance must be a floating tensor [{}] (one weight per column), got {} of shape {}",
           info.name, row_elems, importance.toString(), c10::str(importance.sizes()));
    w = importance.to(at::kCPU, at::kFloat).contiguous();
  }
  const auto bytes = quantize_ggml(type, x.data_ptr<float>(), rows, row_elems, w.defined() ? w.data_ptr<float>() : nullptr);
  const int64_t row_bytes = static_cast<int64_t>(ggml_nbytes(type, row_elems));
  auto out = at::empty({rows, row_bytes}, at::kByte);
  if (!bytes.empty()) std::memcpy(out.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return out;
}

}  // namespace qtune::quant
