#include "qtune/quant/gguf_blocks.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "qtune/util/error.h"

// One dequantize_row_* per block type, in the spirit of ggml-quants.c, but with gguf-py's float32 operations in
// gguf-py's order (each product and difference rounded on its own: the library builds with -ffp-contract=off),
// so the results equal `gguf.quants.dequantize` bit for bit. The bit layouts are ggml-common.h's block_* structs.
namespace qtune::quant {
namespace {

constexpr int64_t QK = 32;    // values per block of the legacy types (QK4_0, QK8_0, ...)
constexpr int64_t QK_K = 256;  // values per super-block of the K-quants

// Dequantizes `n_blocks` consecutive blocks at `x` into `y` (n_blocks * block values).
using DequantRow = void (*)(const uint8_t* x, float* y, int64_t n_blocks);

uint16_t load_u16(const uint8_t* p) {  // little-endian, any alignment (GGUF data need not be aligned in memory)
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// Widening f16 to f32 is exact, except that c10's conversion (F16C, or a multiply by 2^-112) quiets signalling
// NaNs, where numpy keeps the payload bits as they are: NaN and inf are built from the bits here, like numpy does.
float f16_to_f32(uint16_t h) {
  if ((h & 0x7C00) == 0x7C00) {
    const uint32_t bits = (static_cast<uint32_t>(h & 0x8000) << 16) | 0x7F800000u | (static_cast<uint32_t>(h & 0x3FF) << 13);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
}
float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// ---- plain types: one value per "block" ----

void dequantize_row_f32(const uint8_t* x, float* y, int64_t n) { std::memcpy(y, x, n * sizeof(float)); }

void dequantize_row_f16(const uint8_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = load_f16(x + 2 * i);
}

void dequantize_row_bf16(const uint8_t* x, float* y, int64_t n) {
  // bf16 is the top half of an f32: c10 shifts the bits, so NaN payloads survive as in gguf-py.
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(c10::BFloat16(load_u16(x + 2 * i), c10::BFloat16::from_bits()));
}

// ---- legacy 32-value blocks ----

// block_q4_0 (18 bytes): d, qs[16]; value l (< 16) is the low nibble of qs[l], value l + 16 its high nibble.
void dequantize_row_q4_0(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 18, y += QK) {
    const float d = load_f16(x);
    const uint8_t* qs = x + 2;
    for (int l = 0; l < 16; ++l) {
      y[l] = d * static_cast<float>((qs[l] & 0x0F) - 8);
      y[l + 16] = d * static_cast<float>((qs[l] >> 4) - 8);
    }
  }
}

// block_q4_1 (20 bytes): d, m, qs[16]; gguf-py computes (d * q) + m.
void dequantize_row_q4_1(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 20, y += QK) {
    const float d = load_f16(x), m = load_f16(x + 2);
    const uint8_t* qs = x + 4;
    for (int l = 0; l < 16; ++l) {
      y[l] = d * static_cast<float>(qs[l] & 0x0F) + m;
      y[l + 16] = d * static_cast<float>(qs[l] >> 4) + m;
    }
  }
}

// block_q5_0 (22 bytes): d, qh (uint32, bit i = fifth bit of value i), qs[16] as in Q4_0.
void dequantize_row_q5_0(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 22, y += QK) {
    const float d = load_f16(x);
    const uint32_t qh = load_u32(x + 2);
    const uint8_t* qs = x + 6;
    for (int l = 0; l < 16; ++l) {
      const int lo = (qs[l] & 0x0F) | (((qh >> l) & 1) << 4);
      const int hi = (qs[l] >> 4) | (((qh >> (l + 16)) & 1) << 4);
      y[l] = d * static_cast<float>(lo - 16);
      y[l + 16] = d * static_cast<float>(hi - 16);
    }
  }
}

// block_q5_1 (24 bytes): d, m, qh, qs[16]; (d * q) + m.
void dequantize_row_q5_1(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 24, y += QK) {
    const float d = load_f16(x), m = load_f16(x + 2);
    const uint32_t qh = load_u32(x + 4);
    const uint8_t* qs = x + 8;
    for (int l = 0; l < 16; ++l) {
      const int lo = (qs[l] & 0x0F) | (((qh >> l) & 1) << 4);
      const int hi = (qs[l] >> 4) | (((qh >> (l + 16)) & 1) << 4);
      y[l] = d * static_cast<float>(lo) + m;
      y[l + 16] = d * static_cast<float>(hi) + m;
    }
  }
}

// block_q8_0 (34 bytes): d, qs[32] (int8).
void dequantize_row_q8_0(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 34, y += QK) {
    const float d = load_f16(x);
    for (int l = 0; l < 32; ++l) y[l] = static_cast<float>(static_cast<int8_t>(x[2 + l])) * d;
  }
}

// ---- K-quants: 256-value super-blocks of 16 or 8 sub-blocks with their own small scales ----

// block_q2_K (84 bytes): scales[16] (low nibble scale, high nibble min, per 16 values), qs[64], d, dmin.
// Each 128-value half reads 32 bytes of qs four times, two bits at a time. gguf-py: dl = d * sc,
// ml = dmin * m, then dl * q - ml.
void dequantize_row_q2_K(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 84, y += QK_K) {
    const uint8_t* scales = x;
    const uint8_t* qs = x + 16;
    const float d = load_f16(x + 80), dmin = load_f16(x + 82);
    for (int i = 0; i < QK_K; ++i) {
      const int half = i / 128, shift = 2 * ((i % 128) / 32), l = i % 32;
      const uint8_t sc = scales[i / 16];
      const float dl = d * static_cast<float>(sc & 0x0F);
      const float ml = dmin * static_cast<float>(sc >> 4);
      y[i] = dl * static_cast<float>((qs[32 * half + l] >> shift) & 3) - ml;
    }
  }
}

// block_q3_K (110 bytes): hmask[32], qs[64], scales[12] (16 six-bit scales, stored minus 32), d.
// A value is its two low bits from qs (laid out as in Q2_K) minus 4 where its hmask bit is clear;
// the hmask bit of value i is bit i / 32 of hmask[i % 32]. gguf-py: dl = d * (scale - 32), then dl * q.
void dequantize_row_q3_K(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 110, y += QK_K) {
    const uint8_t* hmask = x;
    const uint8_t* qs = x + 32;
    const uint8_t* sc = x + 96;
    const float d = load_f16(x + 108);
    for (int i = 0; i < QK_K; ++i) {
      // Scale s: low nibble of sc[s % 8] (high nibble for s >= 8), and bits 2 * (s / 4) of sc[8 + s % 4] on top.
      const int s = i / 16;
      const int low = (sc[s % 8] >> (4 * (s / 8))) & 0x0F, high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
      const float dl = d * static_cast<float>((low | (high << 4)) - 32);
      const int half = i / 128, shift = 2 * ((i % 128) / 32), l = i % 32;
      const int ql = (qs[32 * half + l] >> shift) & 3;
      const int hbit = (hmask[i % 32] >> (i / 32)) & 1;
      y[i] = dl * static_cast<float>(ql - (hbit ? 0 : 4));
    }
  }
}

// The 6-bit scale and min of sub-block j (of 8) in the 12 packed bytes of Q4_K and Q5_K (get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 0x3F;
    m = q[j + 4] & 0x3F;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// block_q4_K (144 bytes): d, dmin, scales[12], qs[128]; sub-block j (32 values) is the low (j even) or high
// (j odd) nibbles of qs[32 * (j / 2) ...]. gguf-py: (d * sc) * q - (dmin * m).
void dequantize_row_q4_K(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 144, y += QK_K) {
    const float d = load_f16(x), dmin = load_f16(x + 2);
    const uint8_t* scales = x + 4;
    const uint8_t* qs = x + 16;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      scale_min_k4(j, scales, sc, m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const uint8_t* q = qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) y[32 * j + l] = d1 * static_cast<float>((q[l] >> shift) & 0x0F) - m1;
    }
  }
}

// block_q5_K (176 bytes): d, dmin, scales[12], qh[32], qs[128]; as Q4_K with a fifth bit: bit j of qh[l] for
// value l of sub-block j.
void dequantize_row_q5_K(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 176, y += QK_K) {
    const float d = load_f16(x), dmin = load_f16(x + 2);
    const uint8_t* scales = x + 4;
    const uint8_t* qh = x + 16;
    const uint8_t* qs = x + 48;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      scale_min_k4(j, scales, sc, m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const uint8_t* q = qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
        y[32 * j + l] = d1 * static_cast<float>(v) - m1;
      }
    }
  }
}

// block_q6_K (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, per 16 values), d.
// In each 128-value half h: value 64 * k + l (k < 2, l < 64) is nibble k of ql[64 * h + l], and value
// 32 * s + l (s < 4, l < 32) takes bits 2 * s of qh[32 * h + l]; minus 32. gguf-py: (d * scale) * q.
void dequantize_row_q6_K(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += 210, y += QK_K) {
    const uint8_t* ql = x;
    const uint8_t* qh = x + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(x + 192);
    const float d = load_f16(x + 208);
    for (int i = 0; i < QK_K; ++i) {
      const int h = i / 128, r = i % 128;
      const int low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
      const int high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const float dl = d * static_cast<float>(scales[i / 16]);
      y[i] = dl * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

// The dequantizer of each type that has one (ggml_types.cpp's `dequantizable` says the same).
DequantRow row_of(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return dequantize_row_f32;
    case GgmlType::F16: return dequantize_row_f16;
    case GgmlType::BF16: return dequantize_row_bf16;
    case GgmlType::Q4_0: return dequantize_row_q4_0;
    case GgmlType::Q4_1: return dequantize_row_q4_1;
    case GgmlType::Q5_0: return dequantize_row_q5_0;
    case GgmlType::Q5_1: return dequantize_row_q5_1;
    case GgmlType::Q8_0: return dequantize_row_q8_0;
    case GgmlType::Q2_K: return dequantize_row_q2_K;
    case GgmlType::Q3_K: return dequantize_row_q3_K;
    case GgmlType::Q4_K: return dequantize_row_q4_K;
    case GgmlType::Q5_K: return dequantize_row_q5_K;
    case GgmlType::Q6_K: return dequantize_row_q6_K;
    default: return nullptr;
  }
}

std::string dequantizable_names() {
  std::string names;
  for (uint32_t v = 0; v < 64; ++v)
    if (const auto* info = ggml_type_info(v); info && info->dequantizable)
      names += (names.empty() ? "" : ", ") + std::string(info->name);
  return names;
}

}  // namespace

at::Tensor dequantize_ggml(GgmlType type, const uint8_t* data, int64_t n_elements) {
  const auto& info = ggml_type_info(type);
  const DequantRow row = row_of(type);
  if (!row)
    fail("dequantize_ggml: qtune cannot dequantize ggml type {} ({}); it can: {}", info.name,
         static_cast<uint32_t>(type), dequantizable_names());
  ggml_nbytes(type, n_elements);  // validates the count
  if (n_elements > 0 && !data) fail("dequantize_ggml: {} data is null for {} values", info.name, n_elements);
  auto out = at::empty({n_elements}, at::kFloat);
  float* y = out.data_ptr<float>();
  const int64_t n_blocks = n_elements / info.block_elems;
  // Blocks are independent; a grain of ~64k values keeps small tensors on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / info.block_elems);
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    row(data + begin * info.block_bytes, y + begin * info.block_elems, end - begin);
  });
  return out;
}

}  // namespace qtune::quant
