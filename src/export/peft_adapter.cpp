#include "qtune/export/peft_adapter.h"

#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "qtune/io/atomic_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/lora/inject.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::exporting {
namespace {

const std::string kPrefix = "base_model.model.";

// Our parameter name -> PEFT's key. LoRA weights keep their path; a modules_to_save copy is saved under the module's
// own name (PEFT strips "modules_to_save.<adapter>." on save).
std::string peft_key(const std::string& name) { return kPrefix + name; }

std::string leaf_of(const std::string& path) { return path.substr(path.rfind('.') + 1); }

// PEFT's target_modules for exactly the wrapped modules: their leaf names ("q_proj") when those name no other
// linear of the model, else the full paths (PEFT matches a list entry against the whole name or its dotted tail).
std::vector<std::string> target_modules_of(nn::CausalLMImpl& model) {
  std::set<std::string> wrapped, leaves;
  for (const auto& [path, layer] : lora::lora_layers(model)) wrapped.insert(path), leaves.insert(leaf_of(path));
  bool leaves_suffice = true;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const auto& path = item.key();
    if (path.find(".base_layer") != std::string::npos || !std::dynamic_pointer_cast<nn::LinearImpl>(item.value()))
      continue;
    if (leaves.count(leaf_of(path)) && !wrapped.count(path)) leaves_suffice = false;
  }
  const auto& names = leaves_suffice ? leaves : wrapped;
  return std::vector<std::string>(names.begin(), names.end());
}

}  // namespace

void save_peft_adapter(nn::CausalLMImpl& model, const lora::LoraConfig& config, const std::string& base_model,
                       const std::string& dir) {
  std::filesystem::create_directories(dir);
  io::NamedTensors tensors;
  for (const auto& [name, p] : lora::trainable_parameters(model)) tensors.emplace_back(peft_key(name), p.detach().to(at::kCPU));
  io::write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});

  nlohmann::ordered_json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = base_model;
  j["r"] = config.r;
  j["lora_alpha"] = config.alpha;
  j["lora_dropout"] = config.dropout;
  j["target_modules"] = target_modules_of(model);
  j["use_rslora"] = config.use_rslora;
  j["rank_pattern"] = config.rank_pattern;
  j["alpha_pattern"] = config.alpha_pattern;
  j["modules_to_save"] = config.modules_to_save.empty() ? nlohmann::ordered_json(nullptr)
                                                         : nlohmann::ordered_json(config.modules_to_save);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["use_dora"] = false;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["revision"] = nullptr;
  io::write_text_atomically(dir + "/adapter_config.json", j.dump(2) + "\n");
}

lora::LoraConfig read_peft_config(const std::string& dir) {
  const auto path = dir + "/adapter_config.json";
  std::ifstream in(path);
  if (!in) fail("'{}' is not a PEFT adapter directory: {} is missing", dir, path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
  auto get = [&](const char* key, auto fallback) {
    using T = decltype(fallback);
    if (!j.contains(key) || j[key].is_null()) return fallback;
    try {
      return j[key].get<T>();
    } catch (const nlohmann::json::exception&) {
      fail("{}: '{}' has the wrong type ({})", path, key, j[key].dump());
    }
  };
  if (get("peft_type", std::string("LORA")) != "LORA")
    fail("{}: peft_type is '{}', only LORA adapters are supported", path, j["peft_type"].dump());
  lora::LoraConfig c;
  c.r = get("r", int64_t{8});
  c.alpha = get("lora_alpha", 8.0);
  c.dropout = get("lora_dropout", 0.0);
  c.use_rslora = get("use_rslora", false);
  if (j.contains("target_modules") && j["target_modules"].is_string()) {
    // A string other than "all-linear" is a regex PEFT fullmatches against module names.
    const auto t = j["target_modules"].get<std::string>();
    if (t != "all-linear" && t.find_first_of("()[]*+?|\\^$") != std::string::npos)
      fail("{}: target_modules is the regex '{}'; qtune reads lists of module names or \"all-linear\" (list the "
           "modules instead)", path, t);
    c.target_modules = {t};
  }
  else
    c.target_modules = get("target_modules", std::vector<std::string>{});
  c.rank_pattern = get("rank_pattern", std::map<std::string, int64_t>{});
  c.alpha_pattern = get("alpha_pattern", std::map<std::string, double>{});
  c.modules_to_save = get("modules_to_save", std::vector<std::string>{});
  try {
    c.validate();
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  return c;
}

void load_peft_adapter(nn::CausalLMImpl& model, const std::string& dir) {
  const auto path = dir + "/adapter_model.safetensors";
  if (!std::filesystem::exists(path)) fail("'{}' is not a PEFT adapter directory: {} is missing", dir, path);
  auto file = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : lora::trainable_parameters(model)) params[peft_key(name)] = p;
  std::set<std::string> seen;
  torch::NoGradGuard no_grad;
  for (const auto& info : file->tensors()) {
    std::string key = info.name;
    // PEFT writes adapter names into keys in some versions ("lora_A.default.weight"): accept both.
    const std::string tag = ".default.weight";
    if (ends_with(key, tag)) key = key.substr(0, key.size() - tag.size()) + ".weight";
    auto it = params.find(key);
    if (it == params.end())
      fail("{}: tensor '{}' has no place in this model (different architecture, targets or modules_to_save?)", path,
           info.name);
    auto t = file->tensor(info.name);
    if (t.sizes() != it->second.sizes())
      fail("{}: '{}' is [{}] but the model's is [{}] (different rank or model size?)", path, info.name,
           fmt::join(t.sizes(), ", "), fmt::join(it->second.sizes(), ", "));
    it->second.copy_(t);
    seen.insert(key);
  }
  for (const auto& [key, p] : params)
    if (!seen.count(key)) fail("{}: the adapter has no '{}' (trained with other targets or modules_to_save?)", path, key);
}

}  // namespace qtune::exporting
