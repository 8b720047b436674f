#include "qtune/quant/compressed_tensors_format.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <regex>

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {
namespace {

using nlohmann::json;

constexpr const char* kScheme =
    "qtune reads compressed-tensors W8A8 (int8 weights per output channel, int8 inputs per token, dynamic, symmetric: "
    "llm-compressor's scheme \"W8A8\")";

bool absent(const json& q, const char* key) { return !q.contains(key) || q[key].is_null(); }
bool empty_or_absent(const json& q, const char* key) {
  return absent(q, key) || (q[key].is_object() && q[key].empty());
}

// One of the layout names compressed-tensors gives int8 codes stored as plain int8 tensors.
bool int8_layout(const json& v) { return v == "int-quantized" || v == "naive-quantized"; }

// The checks of one QuantizationArgs object (`path` names it), against the values W8A8 needs.
void expect_args(const json& args, const std::string& path, const std::string& where, const char* strategy, bool dynamic) {
  if (!args.is_object()) fail("{}: {} must be an object, got {}; {}", where, path, json_show(args), kScheme);
  auto expect = [&](const char* key, const json& want, bool required) {
    if (!args.contains(key) || args[key].is_null()) {
      if (required) fail("{}: {}.{} is missing (expected {}); {}", where, path, key, want.dump(), kScheme);
      return;
    }
    if (args[key] != want) fail("{}: {}.{} is {}, expected {}; {}", where, path, key, json_show(args[key]), want.dump(), kScheme);
  };
  expect("num_bits", 8, true);
  expect("type", "int", false);  // compressed-tensors' default
  expect("symmetric", true, false);
  expect("strategy", strategy, true);
  expect("dynamic", dynamic, dynamic);  // weights default to static; the inputs must say dynamic
  for (const char* key : {"group_size", "block_structure"})
    if (!absent(args, key)) fail("{}: {}.{} is {}, expected null; {}", where, path, key, json_show(args[key]), kScheme);
}

}  // namespace

bool compressed_tensors_match(const std::string& target, const std::string& name) {
  if (target == "Linear") return true;
  if (target.rfind("re:", 0) == 0) {
    const std::regex re(target.substr(3));  // the caller checked it compiles
    return std::regex_search(name, re, std::regex_constants::match_continuous);
  }
  return target == name;
}

bool CompressedTensorsConfig::quantizes(const std::string& module_name) const {
  auto hit = [&](const std::string& t) { return compressed_tensors_match(t, module_name); };
  return std::any_of(targets.begin(), targets.end(), hit) && !std::any_of(ignore.begin(), ignore.end(), hit);
}

CompressedTensorsConfig CompressedTensorsConfig::from_json(const json& q, const std::string& where) {
  if (!q.is_object()) fail("{}: quantization_config must be an object", where);
  CompressedTensorsConfig c;
  if (!absent(q, "format") && !int8_layout(q["format"]))
    fail("{}: quantization_config.format is {}, not the int8 layout qtune reads (\"int-quantized\"); {}", where,
         json_show(q["format"]), kScheme);
  if (!absent(q, "quantization_status") && q["quantization_status"] != "compressed")
    fail("{}: quantization_config.quantization_status is {}: the weights are not stored as int8 codes (expected "
         "\"compressed\", what llm-compressor saves)", where, json_show(q["quantization_status"]));
  if (!absent(q, "kv_cache_scheme"))
    fail("{}: quantization_config.kv_cache_scheme is {}: a quantized KV cache is not read (expected null); {}", where,
         json_show(q["kv_cache_scheme"]), kScheme);
  if (!empty_or_absent(q, "sparsity_config") &&
      !(q["sparsity_config"].is_object() && q["sparsity_config"].value("format", "") == "dense"))
    fail("{}: quantization_config.sparsity_config is {}: sparse (2:4 or bitmask) weights are not read (expected {{}})",
         where, json_show(q["sparsity_config"]));
  if (!empty_or_absent(q, "transform_config"))
    fail("{}: quantization_config.transform_config is set: rotated (SpinQuant / QuIP) weights are not read (expected {{}})",
         where);

  if (!q.contains("config_groups") || !q["config_groups"].is_object() || q["config_groups"].empty())
    fail("{}: quantization_config.config_groups is missing or empty (expected {{\"group_0\": {{targets, weights, "
         "input_activations}}}})", where);
  for (const auto& [name, group] : q["config_groups"].items()) {
    const auto path = "quantization_config.config_groups." + name;
    if (!group.is_object()) fail("{}: {} must be an object", where, path);
    if (!absent(group, "format") && !int8_layout(group["format"]))
      fail("{}: {}.format is {}, not the int8 layout qtune reads (\"int-quantized\"); {}", where, path,
           json_show(group["format"]), kScheme);
    if (absent(group, "format") && absent(q, "format"))
      fail("{}: quantization_config.format is missing (expected \"int-quantized\")", where);
    if (absent(group, "weights")) fail("{}: {}.weights is missing; {}", where, path, kScheme);
    expect_args(group["weights"], path + ".weights", where, "channel", false);
    if (absent(group, "input_activations"))
      fail("{}: {}.input_activations is null: weight-only int8 (W8A16) is not W8A8; {}", where, path, kScheme);
    expect_args(group["input_activations"], path + ".input_activations", where, "token", true);
    if (!absent(group, "output_activations"))
      fail("{}: {}.output_activations is {}, expected null; {}", where, path, json_show(group["output_activations"]),
           kScheme);
    if (!group.contains("targets") || !group["targets"].is_array() || group["targets"].empty())
      fail("{}: {}.targets must be a non-empty list of module names, \"re:\" patterns or \"Linear\"", where, path);
    for (const auto& t : group["targets"]) {
      if (!t.is_string()) fail("{}: {}.targets holds {}, not a string", where, path, json_show(t));
      c.targets.push_back(t.get<std::string>());
    }
  }
  if (!absent(q, "ignore")) {
    if (!q["ignore"].is_array()) fail("{}: quantization_config.ignore must be a list, got {}", where, json_show(q["ignore"]));
    for (const auto& t : q["ignore"]) {
      if (!t.is_string()) fail("{}: quantization_config.ignore holds {}, not a string", where, json_show(t));
      c.ignore.push_back(t.get<std::string>());
    }
  }
  for (const auto* list : {&c.targets, &c.ignore})
    for (const auto& t : *list)
      if (t.rfind("re:", 0) == 0) {
        try {
          std::regex re(t.substr(3));
        } catch (const std::regex_error& e) {
          fail("{}: quantization_config pattern '{}' is not a regular expression qtune can read: {}", where, t, e.what());
        }
      }
  return c;
}

json CompressedTensorsConfig::w8a8_json(const std::vector<std::string>& ignore) {
  auto args = [](const char* strategy, bool dynamic) {
    return json{{"num_bits", 8},          {"type", "int"},          {"symmetric", true},
                {"group_size", nullptr},  {"strategy", strategy},   {"block_structure", nullptr},
                {"dynamic", dynamic},     {"actorder", nullptr},    {"observer", dynamic ? json(nullptr) : json("minmax")},
                {"observer_kwargs", json::object()}};
  };
  json group = {{"targets", {"Linear"}},
                {"weights", args("channel", false)},
                {"input_activations", args("token", true)},
                {"output_activations", nullptr},
                {"format", "int-quantized"}};
  return {{"quant_method", "compressed-tensors"},
          {"format", "int-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", group}}},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"global_compression_ratio", nullptr},
          {"sparsity_config", json::object()},
          {"transform_config", json::object()},
          {"version", "0.20.1"}};
}

bool has_compressed_w8a8(const io::WeightSource& source, const std::string& m) { return source.has(m + ".weight_scale"); }

W8A8State read_compressed_w8a8(const io::WeightSource& source, const std::string& m, int64_t out, int64_t in,
                               const std::string& config_where) {
  const auto weight_name = m + ".weight", scale_name = m + ".weight_scale";
  if (!source.has(weight_name)) fail("{}: the checkpoint has {} but no {}", source.origin(scale_name), scale_name, weight_name);
  if (!source.has(scale_name))
    fail("{}: int8 codes without their scales: {} is missing ({} quantizes {} with compressed-tensors W8A8)",
         source.origin(weight_name), scale_name, config_where, m);
  auto codes = source.get_raw(weight_name);
  if (codes.scalar_type() != at::kChar || codes.sizes() != at::IntArrayRef({out, in}))
    fail("{}: is {} [{}], expected int8 [{}, {}] (compressed-tensors W8A8 codes, as {} says)", source.origin(weight_name),
         c10::toString(codes.scalar_type()), fmt::join(codes.sizes(), ", "), out, in, config_where);
  auto scale = source.get_raw(scale_name);
  const auto st = scale.scalar_type();
  const bool shape_ok = (scale.dim() == 2 && scale.size(0) == out && scale.size(1) == 1) ||
                        (scale.dim() == 1 && scale.size(0) == out);
  if ((st != at::kFloat && st != at::kBFloat16 && st != at::kHalf) || !shape_ok)
    fail("{}: is {} [{}], expected fp32, bf16 or fp16 [{}, 1] (one scale per output channel: strategy \"channel\")",
         source.origin(scale_name), c10::toString(st), fmt::join(scale.sizes(), ", "), out);
  scale = scale.to(at::kFloat).reshape({out}).contiguous();
  if (!at::isfinite(scale).all().item<bool>() || scale.lt(0).any().item<bool>())
    fail("{}: holds a negative or non-finite scale", source.origin(scale_name));
  for (const char* extra : {".weight_zero_point", ".input_scale"}) {
    const auto name = m + extra;
    if (!source.has(name)) continue;
    if (std::string(extra) == ".input_scale")
      fail("{}: a static input scale, but {} says the inputs are quantized dynamically per token", source.origin(name),
           config_where);
    if (source.get_raw(name).ne(0).any().item<bool>())
      fail("{}: non-zero zero points in a symmetric scheme (asymmetric int8 weights are not read)", source.origin(name));
  }
  W8A8State s{codes.contiguous(), scale};
  s.validate(m);
  return s;
}

void append_compressed_w8a8(io::NamedTensors& out, const std::string& m, const W8A8State& s) {
  out.emplace_back(m + ".weight", s.codes);
  out.emplace_back(m + ".weight_scale", s.scale.reshape({-1, 1}).contiguous());
}

}  // namespace qtune::quant
