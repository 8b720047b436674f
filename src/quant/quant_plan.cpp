#include "qtune/quant/quant_plan.h"

#include <fnmatch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <sstream>

#include "qtune/util/error.h"

namespace qtune::quant {

const char* format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::NF4: return "nf4";
    case WeightFormat::FP4: return "fp4";
    case WeightFormat::Int8: return "int8";
    case WeightFormat::W8A8: return "w8a8";
    case WeightFormat::Dense: return "16bit";
    case WeightFormat::Keep: return "keep";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& name, const std::string& what) {
  if (name == "nf4") return WeightFormat::NF4;
  if (name == "fp4") return WeightFormat::FP4;
  if (name == "int8") return WeightFormat::Int8;
  if (name == "w8a8") return WeightFormat::W8A8;
  if (name == "keep") return WeightFormat::Keep;
  if (name == "16bit" || name == "bf16" || name == "fp16" || name == "fp32" || name == "none") return WeightFormat::Dense;
  fail("{}: format '{}' is not one of nf4, fp4, int8, w8a8, 16bit, keep (16bit also as bf16, fp16, fp32 or none)", what,
       name);
}

bool glob_match(const std::string& pattern, const std::string& name) {
  if (::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
  const std::string prefix = "model.";
  return name.rfind(prefix, 0) == 0 && ::fnmatch(pattern.c_str(), name.c_str() + prefix.size(), 0) == 0;
}

LayerQuant QuantPlan::resolve(const std::string& module_name) const {
  for (const auto& rule : rules)
    if (glob_match(rule.pattern, module_name)) {
      LayerQuant q = base;
      q.format = rule.format;
      return q;
    }
  return base;
}

bool QuantPlan::uses(WeightFormat format) const {
  return base.format == format ||
         std::any_of(rules.begin(), rules.end(), [format](const PlanRule& r) { return r.format == format; });
}

void QuantPlan::validate(const std::string& what) const {
  const int64_t bs = base.blocksize;
  if (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0)
    fail("{}: block_size {} must be a power of two from 32 to 4096", what, bs);
  for (const auto& rule : rules)
    if (rule.pattern.empty()) fail("{}: a rule has an empty pattern", what);
}

QuantPlan QuantPlan::load_yaml(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("{}: cannot read the quantization plan", path);
  } catch (const YAML::Exception& e) {
    fail("{}: not valid YAML: {}", path, e.what());
  }
  QuantPlan plan;
  try {
    if (!root.IsMap()) fail("{}: a plan is a mapping with keys format, block_size, double_quant, rules", path);
    for (const auto& kv : root) {
      const auto key = kv.first.as<std::string>();
      const auto& v = kv.second;
      if (key == "format") plan.base.format = parse_weight_format(v.as<std::string>(), path + ": key 'format'");
      else if (key == "block_size") plan.base.blocksize = v.as<int64_t>();
      else if (key == "double_quant") plan.base.double_quant = v.as<bool>();
      else if (key == "rules") {
        if (!v.IsSequence()) fail("{}: key 'rules' must be a list of {{pattern, format}}", path);
        for (const auto& r : v) {
          if (!r.IsMap() || !r["pattern"] || !r["format"])
            fail("{}: line {}: each rule needs 'pattern' and 'format'", path, r.Mark().line + 1);
          plan.rules.push_back({r["pattern"].as<std::string>(),
                                parse_weight_format(r["format"].as<std::string>(),
                                                    fmt::format("{}: line {}: rule format", path, r.Mark().line + 1))});
        }
      } else if (key != "bits_per_weight" && key != "layers") {
        fail("{}: line {}: unknown key '{}' (expected format, block_size, double_quant, rules)", path,
             kv.first.Mark().line + 1, key);
      }
    }
  } catch (const YAML::Exception& e) {
    fail("{}: line {}: wrong value type: {}", path, e.mark.line + 1, e.msg);
  }
  plan.validate(path);
  return plan;
}

std::string QuantPlan::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "format" << YAML::Value << format_name(base.format);
  out << YAML::Key << "block_size" << YAML::Value << base.blocksize;
  out << YAML::Key << "double_quant" << YAML::Value << base.double_quant;
  out << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
  for (const auto& r : rules)
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "pattern" << YAML::Value << r.pattern << YAML::Key << "format"
        << YAML::Value << format_name(r.format) << YAML::EndMap;
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace qtune::quant
