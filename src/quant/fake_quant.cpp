#include "qtune/quant/fake_quant.h"

#include <fmt/format.h>

#include <array>
#include <limits>
#include <tuple>
#include <utility>

#include "qtune/kernels/dequant.h"
#include "qtune/kernels/dequant_ggml.h"
#include "qtune/kernels/fake_quant.h"
#include "qtune/quant/gguf_quantize.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"

namespace qtune::quant {
namespace {

struct GgmlFormatName {
  const char* name;
  GgmlType type;
};
// The block types whose quantizer (gguf_quantize.h) and dequantize kernel (kernels/dequant_ggml.h) qtune both has.
constexpr std::array<GgmlFormatName, 10> kGgmlFormats = {{{"q8_0", GgmlType::Q8_0},
                                                          {"q4_0", GgmlType::Q4_0},
                                                          {"q4_1", GgmlType::Q4_1},
                                                          {"q5_0", GgmlType::Q5_0},
                                                          {"q5_1", GgmlType::Q5_1},
                                                          {"q2_k", GgmlType::Q2_K},
                                                          {"q3_k", GgmlType::Q3_K},
                                                          {"q4_k", GgmlType::Q4_K},
                                                          {"q5_k", GgmlType::Q5_K},
                                                          {"q6_k", GgmlType::Q6_K}}};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// torchao's eps: finfo(float32).eps for the symmetric and per-token qparams (choose_qparams_affine's default), 1e-6
// for the asymmetric groups (get_groupwise_affine_qparams' default).
constexpr double kSymmetricEps = std::numeric_limits<float>::epsilon();
constexpr double kAsymmetricEps = 1e-6;

// Scale and zero point of each group of x viewed as [rows, groups, group] (fp32), torchao's arithmetic.
std::pair<at::Tensor, at::Tensor> affine_qparams(const at::Tensor& grouped, bool symmetric, int64_t qmin,
                                                 int64_t qmax, double eps) {
  const auto min_neg = at::clamp_max(grouped.amin(-1), 0.0);
  const auto max_pos = at::clamp_min(grouped.amax(-1), 0.0);
  if (symmetric) {
    const auto scale = at::clamp_min(at::maximum(-min_neg, max_pos) / (static_cast<double>(qmax - qmin) / 2), eps);
    return {scale, at::zeros_like(scale)};
  }
  const auto scale = at::clamp_min((max_pos - min_neg) / static_cast<double>(qmax - qmin), eps);
  const auto zero = at::clamp(static_cast<double>(qmin) - at::round(min_neg / scale), static_cast<double>(qmin),
                              static_cast<double>(qmax));
  return {scale, zero};
}

// An Int spec's groups of one weight: its range, its scales (fp32 values; rounded to fp16 when deployed so, after the
// zero point was computed from the fp32 scale, as torchao casts only at the end) and zero points [rows, groups].
struct IntGroups {
  int64_t group = 0, qmin = 0, qmax = 0;
  at::Tensor x, scale, zero;
};

IntGroups int_groups(const at::Tensor& w, const FakeQuantSpec& spec) {
  IntGroups g;
  const int64_t rows = w.size(0), cols = w.size(1);
  g.group = spec.group_for(cols, "fake quantization");
  g.qmin = spec.symmetric ? -(int64_t{1} << (spec.bits - 1)) : 0;
  g.qmax = spec.symmetric ? (int64_t{1} << (spec.bits - 1)) - 1 : (int64_t{1} << spec.bits) - 1;
  g.x = w.to(at::kFloat).contiguous();
  std::tie(g.scale, g.zero) = affine_qparams(g.x.view({rows, cols / g.group, g.group}), spec.symmetric, g.qmin,
                                             g.qmax, spec.symmetric ? kSymmetricEps : kAsymmetricEps);
  if (spec.fp16_scales) g.scale = g.scale.to(at::kHalf).to(at::kFloat);
  return g;
}

FakeQuantized fake_quantize_int(const at::Tensor& w, const FakeQuantSpec& spec) {
  const auto g = int_groups(w, spec);
  auto [values, inside] = kernels::fake_quantize_affine(g.x, g.scale, g.zero, g.group, g.qmin, g.qmax);
  return {values.to(w.scalar_type()), inside};
}

FakeQuantized fake_quantize_4bit(const at::Tensor& w, const FakeQuantSpec& spec) {
  Quantize4Options o;
  o.format = spec.kind == FakeQuantKind::NF4 ? Format4::NF4 : Format4::FP4;
  o.blocksize = spec.group_size;
  o.double_quant = spec.double_quant;
  const auto state = quantize_4bit(w.to(at::kFloat), o);
  return {kernels::dequantize_4bit(state, at::kFloat).view(w.sizes()).to(w.device(), w.scalar_type()), {}};
}

FakeQuantized fake_quantize_ggml(const at::Tensor& w, const FakeQuantSpec& spec) {
  // The GGUF export's last fallbacks (a row no block type divides): F16 rounds each value once, F32 keeps it.
  if (spec.ggml == GgmlType::F16) return {w.to(at::kHalf).to(w.scalar_type()), {}};
  if (spec.ggml == GgmlType::F32) return {w.clone(), {}};
  spec.group_for(w.size(1), "fake quantization");
  const auto blocks = quantize_ggml(spec.ggml, w.to(at::kCPU, at::kFloat).contiguous());
  const auto values = kernels::dequantize_ggml_rows(spec.ggml, blocks, w.size(1), at::kFloat);
  return {values.to(w.device(), w.scalar_type()), {}};
}

}  // namespace

std::string FakeQuantSpec::name() const {
  switch (kind) {
    case FakeQuantKind::NF4:
    case FakeQuantKind::FP4:
      return fmt::format("{} block {}{}", kind == FakeQuantKind::NF4 ? "nf4" : "fp4", group_size,
                         double_quant ? " + double quant" : "");
    case FakeQuantKind::Int:
      return fmt::format("int{} {} {}{}", bits, group_size < 0 ? "per row" : fmt::format("g{}", group_size),
                         symmetric ? "symmetric" : "asymmetric", fp16_scales ? "" : " (fp32 scales)");
    case FakeQuantKind::Ggml:
      for (const auto& f : kGgmlFormats)
        if (f.type == ggml) return f.name;
      return ggml == GgmlType::F16 ? "f16" : ggml == GgmlType::F32 ? "f32" : "?";
  }
  return "?";
}

double FakeQuantSpec::bits_per_weight() const {
  const auto g = static_cast<double>(group_size);
  switch (kind) {
    case FakeQuantKind::NF4:
    case FakeQuantKind::FP4:
      // Double quant: one 8-bit absmax code per block and an fp32 scale per 256 blocks (plus one offset, ignored).
      return 4.0 + (double_quant ? 8.0 / g + 32.0 / (g * 256.0) : 32.0 / g);
    case FakeQuantKind::Int:
      return group_size < 0 ? bits : bits + ((fp16_scales ? 16.0 : 32.0) + (symmetric ? 0.0 : bits)) / g;
    case FakeQuantKind::Ggml: {
      const auto& info = ggml_type_info(ggml);
      return 8.0 * static_cast<double>(info.block_bytes) / static_cast<double>(info.block_elems);
    }
  }
  return 0;
}

int64_t FakeQuantSpec::group_for(int64_t in_features, const std::string& layer) const {
  if (kind == FakeQuantKind::Ggml) {
    const int64_t block = ggml_type_info(ggml).block_elems;
    if (block == 1) return 1;
    if (in_features % block != 0)
      fail("{}: {} quantizes rows in blocks of {}, but this layer's rows hold {} values", layer, name(), block,
           in_features);
    return block;
  }
  const int64_t group = kind == FakeQuantKind::Int && group_size < 0 ? in_features : group_size;
  if (kind == FakeQuantKind::Int && in_features % group != 0)
    fail("{}: {} needs rows whose length is a multiple of {}, but this layer's rows hold {} values (choose a group "
         "that divides {}, or -1 for one group per row)",
         layer, name(), group, in_features, in_features);
  return group;
}

std::string fake_quant_format_names() {
  std::string s = "nf4, fp4, int2 ... int8";
  for (const auto& f : kGgmlFormats) s += std::string(", ") + f.name;
  return s;
}

FakeQuantSpec parse_fake_quant(const std::string& format, int64_t group_size, bool symmetric, const std::string& key) {
  const auto f = lower(format);
  FakeQuantSpec s;
  s.symmetric = symmetric;
  if (f == "nf4" || f == "fp4") {
    s.kind = f == "nf4" ? FakeQuantKind::NF4 : FakeQuantKind::FP4;
    s.group_size = group_size == 0 ? 64 : group_size;
    if (s.group_size < 32 || s.group_size > 4096 || (s.group_size & (s.group_size - 1)) != 0)
      fail("{}: {} blocks must be a power of two from 32 to 4096, got {}", key, f, s.group_size);
    return s;
  }
  if (f.size() == 4 && f.compare(0, 3, "int") == 0 && f[3] >= '2' && f[3] <= '8') {
    s.kind = FakeQuantKind::Int;
    s.bits = f[3] - '0';
    s.group_size = group_size == 0 ? (s.bits == 8 ? -1 : 32) : group_size;
    if (s.group_size != -1 && s.group_size < 2)
      fail("{}: the group of {} must be at least 2, or -1 for one group per row (got {})", key, f, s.group_size);
    return s;
  }
  for (const auto& g : kGgmlFormats)
    if (f == g.name) {
      s.kind = FakeQuantKind::Ggml;
      s.ggml = g.type;
      if (group_size != 0 && group_size != ggml_type_info(g.type).block_elems)
        fail("{}: {} has a fixed block of {} values; leave the group size at 0 (got {})", key, f,
             ggml_type_info(g.type).block_elems, group_size);
      s.group_size = ggml_type_info(g.type).block_elems;
      return s;
    }
  fail("{}: unknown fake-quantization format '{}'; expected one of {}", key, format, fake_quant_format_names());
}

FakeQuantSpec ggml_fake_quant(GgmlType type) {
  FakeQuantSpec s;
  s.kind = FakeQuantKind::Ggml;
  s.ggml = type;
  s.group_size = ggml_type_info(type).block_elems;
  if (type == GgmlType::F16 || type == GgmlType::F32) return s;
  for (const auto& f : kGgmlFormats)
    if (f.type == type) return s;
  fail("fake quantization: no quantizer for the GGUF type {}", ggml_type_info(type).name);
}

FakeQuantized fake_quantize_weight(const at::Tensor& weight, const FakeQuantSpec& spec) {
  if (weight.dim() != 2 || !weight.is_floating_point()) fail("fake quantization: expected a 2-D floating weight");
  switch (spec.kind) {
    case FakeQuantKind::NF4:
    case FakeQuantKind::FP4: return fake_quantize_4bit(weight, spec);
    case FakeQuantKind::Int: return fake_quantize_int(weight, spec);
    case FakeQuantKind::Ggml: return fake_quantize_ggml(weight, spec);
  }
  fail("fake quantization: unknown format");
}

IntQuantized int_codes(const at::Tensor& weight, const FakeQuantSpec& spec) {
  if (spec.kind != FakeQuantKind::Int) fail("integer codes: {} is not an integer format", spec.name());
  if (weight.dim() != 2 || !weight.is_floating_point()) fail("integer codes: expected a 2-D floating weight");
  IntQuantized q;
  q.grid.bits = spec.bits;
  q.grid.group_size = spec.group_size;
  q.grid.sym = spec.symmetric;
  q.grid.validate(spec.name());
  const auto g = int_groups(weight.to(at::kCPU), spec);
  const int64_t rows = g.x.size(0), cols = g.x.size(1), groups = cols / g.group;
  // The kernel's arithmetic in ATen: one fp32 product with the fp32 reciprocal, rounded half to even, then the zero
  // point, clamped.
  const auto inv = g.scale.reciprocal().unsqueeze(-1);
  const auto zero = g.zero.unsqueeze(-1);
  const auto signed_codes = at::clamp(at::round(g.x.view({rows, groups, g.group}) * inv) + zero,
                                      static_cast<double>(g.qmin), static_cast<double>(g.qmax));
  const double shift = spec.symmetric ? static_cast<double>(int64_t{1} << (spec.bits - 1)) : 0.0;
  q.codes = (signed_codes + shift).view({rows, cols}).to(at::kByte);
  q.scales = g.scale.t().contiguous();
  q.zeros = (g.zero + shift).t().contiguous().to(at::kInt);
  q.g_idx = at::div(at::arange(cols, at::kLong), g.group, "floor").to(at::kInt);
  return q;
}

FakeQuantized fake_quantize_tokens_int8(const at::Tensor& x) {
  if (x.dim() < 1 || !x.is_floating_point()) fail("activation fake quantization: expected a floating tensor");
  const int64_t features = x.size(-1);
  const auto rows = x.to(at::kFloat).reshape({-1, features}).contiguous();
  auto [scale, zero] = affine_qparams(rows.view({rows.size(0), 1, features}), false, -128, 127, kSymmetricEps);
  auto [values, inside] = kernels::fake_quantize_affine(rows, scale, zero, features, -128, 127);
  return {values.view(x.sizes()).to(x.scalar_type()), inside.view(x.sizes())};
}

}  // namespace qtune::quant
