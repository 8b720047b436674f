#pragma once
// A tiny Llama as a GGUF file whose projections are ggml blocks of every type qtune can keep (and F16/BF16/F32), for
// the quant.format keep tests. The blocks are random (finite f16 scales, sized so weights stay below ~0.1): loading
// them kept or dequantized must give the same model, whatever the values.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "qtune/quant/ggml_types.h"
#include "qtune/quant/ggml_weight.h"

namespace qtune::test {

struct TinyGgufSpec {
  int64_t hidden = 256, intermediate = 512, layers = 2, heads = 4, kv_heads = 2, vocab = 64;
  // The projections' types, layer by layer in the order q, k, v, o, gate, up, down (cycled if shorter). The default
  // puts each of the ten block types and the three float types somewhere, with block types under q and k (whose rows
  // the loader unpermutes).
  std::vector<quant::GgmlType> projections = {
      quant::GgmlType::Q4_0, quant::GgmlType::Q4_1, quant::GgmlType::Q5_0, quant::GgmlType::Q5_1,
      quant::GgmlType::Q8_0, quant::GgmlType::Q2_K, quant::GgmlType::Q3_K, quant::GgmlType::Q4_K,
      quant::GgmlType::Q5_K, quant::GgmlType::Q6_K, quant::GgmlType::F16,  quant::GgmlType::BF16,
      quant::GgmlType::F32,  quant::GgmlType::Q4_1};
  quant::GgmlType embedding = quant::GgmlType::Q8_0;
  int64_t bos = -1, eos = -1;  // tokenizer.ggml.*_token_id when >= 0
  uint64_t seed = 7;
};

struct TinyGguf {
  std::string path;
  std::map<std::string, quant::GgmlType> types;  // Hugging Face weight name -> stored type (projections)
  std::map<std::string, uint64_t> bytes;         // and its bytes in the file
};

namespace tiny_gguf_detail {

// Largest |code| x sub-scale of each block type: its f16 scales are drawn below 0.1 / that, so weights stay < ~0.1.
inline double max_scale(quant::GgmlType t) {
  switch (t) {
    case quant::GgmlType::Q4_0: return 0.1 / 8;
    case quant::GgmlType::Q4_1: return 0.1 / 16;
    case quant::GgmlType::Q5_0: return 0.1 / 16;
    case quant::GgmlType::Q5_1: return 0.1 / 32;
    case quant::GgmlType::Q8_0: return 0.1 / 128;
    case quant::GgmlType::Q2_K: return 0.1 / 45;
    case quant::GgmlType::Q3_K: return 0.1 / 128;
    case quant::GgmlType::Q4_K: return 0.1 / 945;
    case quant::GgmlType::Q5_K: return 0.1 / 1953;
    default: return 0.1 / 4096;  // Q6_K
  }
}

// [rows, cols] values of `type` as the file's bytes.
inline std::string tensor_bytes(quant::GgmlType type, int64_t rows, int64_t cols, at::Generator& gen, double std) {
  at::Tensor t;
  if (type == quant::GgmlType::F32) t = (at::randn({rows, cols}, gen) * std).contiguous();
  else if (type == quant::GgmlType::F16) t = (at::randn({rows, cols}, gen) * std).to(at::kHalf).contiguous();
  else if (type == quant::GgmlType::BF16) t = (at::randn({rows, cols}, gen) * std).to(at::kBFloat16).contiguous();
  else t = quant::random_ggml_blocks(type, rows, cols, gen, max_scale(type));
  return std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
}

}  // namespace tiny_gguf_detail

inline TinyGguf write_tiny_gguf(const std::string& path, const TinyGgufSpec& s = {}) {
  using quant::GgmlType;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(s.seed);
  GgufBuilder b;
  b.kv_str("general.architecture", "llama");
  b.kv_u32("llama.embedding_length", s.hidden);
  b.kv_u32("llama.feed_forward_length", s.intermediate);
  b.kv_u32("llama.block_count", s.layers);
  b.kv_u32("llama.attention.head_count", s.heads);
  b.kv_u32("llama.attention.head_count_kv", s.kv_heads);
  b.kv_u32("llama.context_length", 256);
  b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.kv_f32("llama.rope.freq_base", 10000.0f);
  if (s.bos >= 0) b.kv_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(s.bos));
  if (s.eos >= 0) b.kv_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(s.eos));

  TinyGguf out;
  out.path = path;
  std::string data;
  auto add = [&](const std::string& name, GgmlType type, int64_t rows, int64_t cols, double std, double mean = 0) {
    data.resize((data.size() + 31) / 32 * 32, '\0');  // general.alignment
    const uint64_t offset = data.size();
    if (mean != 0) {  // norms: mean + noise, F32
      const auto t = (at::randn({rows, cols}, gen) * std + mean).contiguous();
      data.append(static_cast<const char*>(t.data_ptr()), t.numel() * 4);
    } else {
      data += tiny_gguf_detail::tensor_bytes(type, rows, cols, gen, std);
    }
    std::vector<uint64_t> dims{static_cast<uint64_t>(cols)};
    if (rows > 1) dims.push_back(static_cast<uint64_t>(rows));
    b.tensor({name, dims, static_cast<uint32_t>(type), offset});
    return data.size() - offset;
  };
  const int64_t head_dim = s.hidden / s.heads, kv = s.kv_heads * head_dim;
  add("token_embd.weight", s.embedding, s.vocab, s.hidden, 0.05);
  add("output_norm.weight", GgmlType::F32, 1, s.hidden, 0.1, 1.0);
  size_t next = 0;
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".", hf = "model.layers." + std::to_string(l) + ".";
    add(blk + "attn_norm.weight", GgmlType::F32, 1, s.hidden, 0.1, 1.0);
    add(blk + "ffn_norm.weight", GgmlType::F32, 1, s.hidden, 0.1, 1.0);
    const struct {
      const char *gguf, *hf;
      int64_t rows, cols;
    } projections[] = {{"attn_q", "self_attn.q_proj", s.hidden, s.hidden},  {"attn_k", "self_attn.k_proj", kv, s.hidden},
                       {"attn_v", "self_attn.v_proj", kv, s.hidden},        {"attn_output", "self_attn.o_proj", s.hidden, s.hidden},
                       {"ffn_gate", "mlp.gate_proj", s.intermediate, s.hidden}, {"ffn_up", "mlp.up_proj", s.intermediate, s.hidden},
                       {"ffn_down", "mlp.down_proj", s.hidden, s.intermediate}};
    for (const auto& p : projections) {
      const auto type = s.projections[next++ % s.projections.size()];
      const std::string name = hf + p.hf + ".weight";
      out.types[name] = type;
      out.bytes[name] = add(blk + p.gguf + ".weight", type, p.rows, p.cols, 0.05);
    }
  }
  std::ofstream(path, std::ios::binary) << b.build(data);
  return out;
}

}  // namespace qtune::test
