#include "qtune/quant/bnb_format.h"

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {
namespace {

const char* kStateKey = ".quant_state.bitsandbytes__";

at::ScalarType torch_dtype(const std::string& name, const std::string& what) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("{}: dtype '{}' is not float32, bfloat16 or float16", what, name);
}

std::string torch_dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

}  // namespace

std::string bnb_4bit_state_key(const io::WeightSource& source, const std::string& weight_name) {
  for (const char* type : {"nf4", "fp4"}) {
    const std::string key = weight_name + kStateKey + type;
    if (source.has(key)) return key;
  }
  return "";
}

Quant4State read_bnb_4bit(const io::WeightSource& source, const std::string& weight_name) {
  const std::string key = bnb_4bit_state_key(source, weight_name);
  if (key.empty()) fail("{}: no bitsandbytes 4-bit state ({}nf4 or fp4)", weight_name, kStateKey);
  auto bytes = source.get_raw(key).contiguous();
  if (bytes.scalar_type() != at::kByte) fail("{}: must be U8 (JSON bytes)", key);
  const std::string text(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), bytes.numel());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", key, e.what());
  }
  Quant4State s;
  try {
    const auto quant_type = j.at("quant_type").get<std::string>();
    if (key.substr(key.size() - 3) != quant_type)
      fail("{}: quant_type '{}' does not match the key", key, quant_type);
    s.format = quant_type == "nf4" ? Format4::NF4 : Format4::FP4;
    s.blocksize = j.at("blocksize").get<int64_t>();
    s.shape = j.at("shape").get<std::vector<int64_t>>();
    s.dtype = torch_dtype(j.at("dtype").get<std::string>(), key);
    s.packed = source.get_raw(weight_name).contiguous();
    s.code = source.get_raw(weight_name + ".quant_map").contiguous();
    auto absmax = source.get_raw(weight_name + ".absmax").contiguous();
    if (j.contains("nested_blocksize")) {
      NestedAbsmax n;
      n.codes = absmax;
      n.absmax = source.get_raw(weight_name + ".nested_absmax").contiguous();
      n.map = source.get_raw(weight_name + ".nested_quant_map").contiguous();
      n.blocksize = j.at("nested_blocksize").get<int64_t>();
      n.offset = j.at("nested_offset").get<float>();
      s.nested = n;
    } else {
      s.absmax = absmax;
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: missing or mistyped key in {}: {}", key, json_show(j), e.what());
  }
  if (s.packed.scalar_type() != at::kByte)
    fail("{}: packed 4-bit codes must be U8, got {} (quant_storage other than uint8 is not supported)", weight_name,
         c10::toString(s.packed.scalar_type()));
  s.packed = s.packed.reshape({-1, 1});
  s.validate(weight_name);
  return s;
}

void append_bnb_4bit(io::NamedTensors& out, const std::string& w, const Quant4State& s) {
  nlohmann::ordered_json j = {{"quant_type", s.format == Format4::NF4 ? "nf4" : "fp4"},
                              {"blocksize", s.blocksize},
                              {"dtype", torch_dtype_name(s.dtype)},
                              {"shape", s.shape}};
  out.emplace_back(w, s.packed);
  if (s.nested) {
    out.emplace_back(w + ".absmax", s.nested->codes);
    out.emplace_back(w + ".nested_absmax", s.nested->absmax);
    out.emplace_back(w + ".nested_quant_map", s.nested->map);
    j["nested_blocksize"] = s.nested->blocksize;
    j["nested_dtype"] = "float32";
    j["nested_offset"] = s.nested->offset;
  } else {
    out.emplace_back(w + ".absmax", s.absmax);
  }
  out.emplace_back(w + ".quant_map", s.code);
  const std::string text = j.dump();
  auto bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), text.data(), text.size());
  out.emplace_back(w + kStateKey + j["quant_type"].get<std::string>(), bytes);
}

bool has_bnb_int8(const io::WeightSource& source, const std::string& module) { return source.has(module + ".SCB"); }

Int8State read_bnb_int8(const io::WeightSource& source, const std::string& module) {
  Int8State s{source.get_raw(module + ".weight").contiguous(), source.get_raw(module + ".SCB").contiguous()};
  s.validate(module);
  return s;
}

void append_bnb_int8(io::NamedTensors& out, const std::string& module, const Int8State& s) {
  out.emplace_back(module + ".weight", s.codes);
  out.emplace_back(module + ".SCB", s.row_absmax);
}

nlohmann::json bnb_quantization_config(const std::optional<LayerQuant>& four_bit, bool eight_bit,
                                       const std::string& compute_dtype, const std::vector<std::string>& skip_modules) {
  const LayerQuant q = four_bit.value_or(LayerQuant{});
  nlohmann::json j = {{"quant_method", "bitsandbytes"},
                      {"load_in_4bit", four_bit.has_value()},
                      {"load_in_8bit", eight_bit},
                      {"bnb_4bit_quant_type", q.format == WeightFormat::FP4 ? "fp4" : "nf4"},
                      {"bnb_4bit_use_double_quant", four_bit.has_value() && q.double_quant},
                      {"bnb_4bit_compute_dtype", compute_dtype},
                      {"bnb_4bit_quant_storage", "uint8"},
                      {"llm_int8_skip_modules", skip_modules.empty() ? nlohmann::json(nullptr) : nlohmann::json(skip_modules)},
                      {"llm_int8_threshold", 6.0},
                      {"llm_int8_has_fp16_weight", false},
                      {"llm_int8_enable_fp32_cpu_offload", false}};
  if (four_bit && eight_bit)
    j["qtune_note"] = "4-bit and 8-bit layers mixed: only qtune loads this checkpoint (transformers' "
                      "BitsAndBytesConfig holds one of the two and refuses load_in_4bit with load_in_8bit)";
  return j;
}

}  // namespace qtune::quant
