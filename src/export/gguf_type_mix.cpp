#include "qtune/export/gguf_type_mix.h"

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::exporting {
namespace {

using quant::GgmlType;

constexpr GgufFileType kFileTypes[] = {
    {"f32", 0, GgmlType::F32, false},      {"f16", 1, GgmlType::F16, false},       {"bf16", 32, GgmlType::BF16, false},
    {"q8_0", 7, GgmlType::Q8_0, false},    {"q4_0", 2, GgmlType::Q4_0, false},     {"q4_1", 3, GgmlType::Q4_1, false},
    {"q5_0", 8, GgmlType::Q5_0, false},    {"q5_1", 9, GgmlType::Q5_1, false},     {"q4_k_m", 15, GgmlType::Q4_K, true},
    {"q5_k_m", 17, GgmlType::Q5_K, true},  {"q6_k", 18, GgmlType::Q6_K, false},
};

bool is_quantized(GgmlType t) { return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16; }
int64_t block(GgmlType t) { return quant::ggml_type_info(t).block_elems; }

// llama-quant.cpp's use_more_bits: the first and last eighth of the layers, and every third one between.
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// llama-quant.cpp's tensor_type_fallback.
GgmlType fallback(GgmlType t, int64_t ncols) {
  if (ncols % block(t) == 0) return t;
  GgmlType r = t;
  switch (t) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K: r = GgmlType::Q4_0; break;
    case GgmlType::Q4_K: r = GgmlType::Q5_0; break;
    case GgmlType::Q5_K: r = GgmlType::Q5_1; break;
    case GgmlType::Q6_K: r = GgmlType::Q8_0; break;
    default: break;
  }
  return ncols % block(r) == 0 ? r : GgmlType::F16;
}

}  // namespace

const GgufFileType* find_gguf_file_type(const std::string& name) {
  for (const auto& t : kFileTypes)
    if (name == t.name) return &t;
  return nullptr;
}

const GgufFileType& parse_gguf_file_type(const std::string& name) {
  if (const auto* t = find_gguf_file_type(name)) return *t;
  fail("--type '{}' is not a GGUF type qtune writes (expected {})", name, gguf_file_type_names());
}

std::string gguf_file_type_names() {
  std::string out;
  for (const auto& t : kFileTypes) out += std::string(out.empty() ? "" : " | ") + t.name;
  return out;
}

GgufTypeMix::GgufTypeMix(const GgufFileType& ft, int64_t n_layers, bool tied, bool has_importance)
    : ft_(ft), n_layers_(n_layers), tied_(tied), importance_(has_importance) {}

GgmlType GgufTypeMix::choose(const std::string& name, const std::vector<int64_t>& shape) {
  // tensor_allows_quantization: 2-D weights other than norms.
  if (shape.size() < 2 || !ends_with(name, "weight") || name.find("_norm.weight") != std::string::npos)
    return GgmlType::F32;
  const int64_t ncols = shape.back();
  GgmlType t = ft_.base;
  if (!is_quantized(t)) return t;
  const bool output = name == "output.weight" || (tied_ && name == "token_embd.weight");
  if (output) {
    if (ncols % block(t) != 0) t = GgmlType::Q8_0;
    else if (t != GgmlType::Q8_0) t = GgmlType::Q6_K;
  } else if (ends_with(name, ".attn_v.weight")) {
    if (ft_.k_mix && use_more_bits(i_attn_v_, n_layers_)) t = GgmlType::Q6_K;
    ++i_attn_v_;
  } else if (ends_with(name, ".ffn_down.weight")) {
    const int64_t i = i_ffn_down_;
    if (ft_.k_mix && use_more_bits(i, n_layers_)) t = GgmlType::Q6_K;
    else if ((t == GgmlType::Q4_0 || t == GgmlType::Q5_0) && importance_ && i < n_layers_ / 8)
      t = t == GgmlType::Q4_0 ? GgmlType::Q4_1 : GgmlType::Q5_1;  // llama.cpp's guard for early ffn_down with an imatrix
    ++i_ffn_down_;
  }
  return fallback(t, ncols);
}

}  // namespace qtune::exporting
