#include "qtune/lora/lora_config.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <regex>

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::lora {
namespace {

// PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", name). std::regex_match anchors both ends, as
// re.match plus `$` does.
std::regex pattern_regex(const std::string& field, const std::string& key) {
  try {
    return std::regex("(.*\\.)?(" + key + ")", std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("LoRA config field '{}': key '{}' is not a valid regex ({})", field, key, e.what());
  }
}

template <typename T>
std::optional<T> match_pattern(const std::string& field, const std::map<std::string, T>& patterns,
                               const std::string& module_name) {
  for (const auto& [key, value] : patterns)
    if (std::regex_match(module_name, pattern_regex(field, key))) return value;
  return std::nullopt;
}

bool is_projection(const std::string& name) {
  const auto& names = target_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string last_component(const std::string& module_name) {
  const auto dot = module_name.rfind('.');
  return dot == std::string::npos ? module_name : module_name.substr(dot + 1);
}

}  // namespace

void LoraConfig::validate() const {
  if (r <= 0) fail("LoRA config field 'r' must be a positive integer, got {}", r);
  if (!std::isfinite(alpha) || alpha <= 0) fail("LoRA config field 'alpha' must be > 0, got {}", alpha);
  if (!(dropout >= 0 && dropout < 1)) fail("LoRA config field 'dropout' must lie in [0, 1), got {}", dropout);
  if (target_modules.empty())
    fail("LoRA config field 'target_modules' is empty: name projections ({}) or \"all-linear\"",
         fmt::join(target_names(), ", "));
  const bool all_linear = std::find(target_modules.begin(), target_modules.end(), "all-linear") != target_modules.end();
  if (all_linear && target_modules.size() > 1)
    fail("LoRA config field 'target_modules': \"all-linear\" must be the only entry, got [{}]",
         fmt::join(target_modules, ", "));
  // Short names ("q_proj") or longer suffixes of module names ("model.layers.0.self_attn.q_proj": PEFT saves an
  // "all-linear" adapter with the full names it resolved); either way the last component must be a projection.
  for (const auto& name : target_modules)
    if (name != "all-linear" && !is_projection(last_component(name)))
      fail("LoRA config field 'target_modules': unknown module '{}' (expected one of {} or \"all-linear\")", name,
           fmt::join(target_names(), ", "));
  for (const auto& [key, rank] : rank_pattern) {
    pattern_regex("rank_pattern", key);
    if (rank <= 0)
      fail("LoRA config field 'rank_pattern': rank for '{}' must be a positive integer, got {}", key, rank);
  }
  for (const auto& [key, a] : alpha_pattern) {
    pattern_regex("alpha_pattern", key);
    if (!std::isfinite(a) || a <= 0)
      fail("LoRA config field 'alpha_pattern': alpha for '{}' must be > 0, got {}", key, a);
  }
  for (const auto& name : modules_to_save)
    if (name != "lm_head" && name != "embed_tokens" && name != "model.embed_tokens")
      fail("LoRA config field 'modules_to_save': cannot train module '{}' in full (only lm_head and embed_tokens)",
           name);
}

std::optional<LoraTarget> LoraConfig::resolve(const std::string& module_name) const {
  const auto leaf = last_component(module_name);
  const bool all_linear = target_modules.size() == 1 && target_modules[0] == "all-linear";
  // PEFT's rule for a list: the module's name equals an entry or ends with "." + entry.
  auto names_it = [&](const std::string& t) { return module_name == t || ends_with(module_name, "." + t); };
  const bool targeted = all_linear ? is_projection(leaf)
                                   : std::any_of(target_modules.begin(), target_modules.end(), names_it);
  if (!targeted) return std::nullopt;
  LoraTarget t;
  t.r = match_pattern("rank_pattern", rank_pattern, module_name).value_or(r);
  t.alpha = match_pattern("alpha_pattern", alpha_pattern, module_name).value_or(alpha);
  // PEFT (update_layer): scaling = lora_alpha / sqrt(r) with rsLoRA, lora_alpha / r otherwise, with r and alpha
  // after the patterns.
  t.scale = use_rslora ? t.alpha / std::sqrt(static_cast<double>(t.r)) : t.alpha / static_cast<double>(t.r);
  return t;
}

}  // namespace qtune::lora
