#include "qtune/quant/gptq_format.h"

#include <fmt/ranges.h>

#include "qtune/quant/packed_words.h"
#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {
namespace {

int64_t per_word(int bits) { return 32 / bits; }

// One set bit at the bottom of every field: the words gptqmodel adds to turn stored v1 zeros into v2.
int64_t field_ones(int bits) {
  int64_t v = 0;
  for (int shift = 0; shift < 32; shift += bits) v |= int64_t{1} << shift;
  return v;
}

at::Tensor add_words(const at::Tensor& words, int64_t delta) {
  // int32 arithmetic modulo 2^32, as torch's int32 += does.
  return as_int32_words((words.to(at::kLong) + delta).bitwise_and((int64_t{1} << 32) - 1));
}

const char* format_name(GptqCheckpointFormat f) { return f == GptqCheckpointFormat::V1 ? "gptq" : "gptq_v2"; }

}  // namespace

at::Tensor gptq_zeros_v1_to_v2(const at::Tensor& qzeros, int bits) { return add_words(qzeros, field_ones(bits)); }
at::Tensor gptq_zeros_v2_to_v1(const at::Tensor& qzeros, int bits) { return add_words(qzeros, -field_ones(bits)); }

namespace {

std::string escaped(const std::string& name) {
  std::string out;
  for (char ch : name) {
    if (std::string(".^$|()[]{}*+?\\").find(ch) != std::string::npos) out += '\\';
    out += ch;
  }
  return out;
}

GptqDynamicRule make_rule(const std::string& pattern, const std::string& where) {
  GptqDynamicRule r;
  r.pattern = pattern;
  r.skip = pattern.rfind("-:", 0) == 0;
  const auto raw = pattern.rfind("-:", 0) == 0 || pattern.rfind("+:", 0) == 0 ? pattern.substr(2) : pattern;
  try {
    r.re = std::regex(raw, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("{}: quantization_config.dynamic pattern {} is not a regular expression qtune reads ({})", where,
         json_show(pattern), e.what());
  }
  return r;
}

}  // namespace

std::optional<IntGridOptions> GptqConfig::grid_for(const std::string& module_name) const {
  for (const auto& r : dynamic) {
    if (!std::regex_search(module_name, r.re, std::regex_constants::match_continuous)) continue;
    if (r.skip) return std::nullopt;
    IntGridOptions g = grid;
    if (r.bits) g.bits = *r.bits;
    if (r.group_size) g.group_size = *r.group_size;
    if (r.sym) g.sym = *r.sym;
    return g;
  }
  return grid;
}

void GptqConfig::add_override(const std::string& module_name, const IntGridOptions& g) {
  auto r = make_rule("+:" + escaped(module_name), "qtune");
  r.bits = g.bits, r.group_size = g.group_size, r.sym = g.sym;
  dynamic.push_back(std::move(r));
}

void GptqConfig::add_skip(const std::string& module_name) {
  dynamic.push_back(make_rule("-:" + escaped(module_name), "qtune"));
}

GptqConfig GptqConfig::from_json(const nlohmann::json& q, const std::string& where) {
  GptqConfig c;
  auto int_key = [&](const char* key, int64_t fallback) -> int64_t {
    if (!q.contains(key)) return fallback;
    if (!q[key].is_number_integer()) fail("{}: quantization_config.{} must be an integer, got {}", where, key, json_show(q[key]));
    return q[key].get<int64_t>();
  };
  auto bool_key = [&](const char* key, bool fallback) {
    if (!q.contains(key) || q[key].is_null()) return fallback;
    if (!q[key].is_boolean()) fail("{}: quantization_config.{} must be true or false, got {}", where, key, json_show(q[key]));
    return q[key].get<bool>();
  };
  if (!q.contains("bits")) fail("{}: quantization_config has no 'bits' (a GPTQ checkpoint states 2, 4 or 8)", where);
  c.grid.bits = static_cast<int>(int_key("bits", 4));
  c.grid.group_size = int_key("group_size", 128);
  c.grid.sym = bool_key("sym", true);
  c.desc_act = bool_key("desc_act", false);
  c.static_groups = bool_key("static_groups", false);
  c.true_sequential = bool_key("true_sequential", true);
  if (q.contains("damp_percent") && q["damp_percent"].is_number()) c.damp_percent = q["damp_percent"].get<double>();
  const std::string fmt_key = q.contains("checkpoint_format") ? "checkpoint_format" : "format";
  if (q.contains(fmt_key) && !q[fmt_key].is_null()) {
    const auto f = q[fmt_key].is_string() ? q[fmt_key].get<std::string>() : "";
    if (f == "gptq") c.checkpoint_format = GptqCheckpointFormat::V1;
    else if (f == "gptq_v2") c.checkpoint_format = GptqCheckpointFormat::V2;
    else
      fail("{}: quantization_config.{} {} is not a GPTQ layout qtune reads (expected \"gptq\" or \"gptq_v2\"; "
           "marlin, bitblas and the other kernel layouts are repacked forms: convert to gptq with gptqmodel first)",
           where, fmt_key, json_show(q[fmt_key]));
  }
  if (q.contains("dynamic") && !q["dynamic"].is_null()) {
    if (!q["dynamic"].is_object())
      fail("{}: quantization_config.dynamic must map module patterns to overrides, got {}", where, json_show(q["dynamic"]));
    for (const auto& [pattern, o] : q["dynamic"].items()) {
      auto r = make_rule(pattern, where);
      if (!o.is_object()) fail("{}: quantization_config.dynamic.{} must be an object, got {}", where, pattern, json_show(o));
      if (o.contains("bits")) r.bits = o["bits"].get<int>();
      if (o.contains("group_size")) r.group_size = o["group_size"].get<int64_t>();
      if (o.contains("sym")) r.sym = o["sym"].get<bool>();
      c.dynamic.push_back(std::move(r));
    }
  }
  try {
    c.grid.validate("GPTQ");
    for (const auto& r : c.dynamic) {
      IntGridOptions g = c.grid;
      if (r.bits) g.bits = *r.bits;
      if (r.group_size) g.group_size = *r.group_size;
      g.validate("dynamic " + r.pattern);
    }
  } catch (const Error& e) {
    fail("{}: quantization_config: {}", where, e.what());
  }
  return c;
}

nlohmann::json GptqConfig::to_json() const {
  nlohmann::json j = {{"quant_method", "gptq"},
          {"bits", grid.bits},
          {"group_size", grid.group_size},
          {"sym", grid.sym},
          {"desc_act", desc_act},
          {"static_groups", static_groups},
          {"true_sequential", true_sequential},
          {"damp_percent", damp_percent},
          {"checkpoint_format", format_name(checkpoint_format)},
          {"pack_dtype", "int32"},
          {"lm_head", false},
          {"meta", {{"quantizer", {"qtune"}}}}};
  if (dynamic.empty()) return j;
  auto& d = j["dynamic"] = nlohmann::json::object();
  for (const auto& r : dynamic) {
    auto& o = d[r.pattern] = nlohmann::json::object();
    if (r.bits) o["bits"] = *r.bits;
    if (r.group_size) o["group_size"] = *r.group_size;
    if (r.sym) o["sym"] = *r.sym;
  }
  return j;
}

GptqCheckpointFormat default_checkpoint_format(const GptqConfig& config) {
  bool asymmetric = !config.grid.sym;
  for (const auto& r : config.dynamic) asymmetric = asymmetric || (!r.skip && r.sym && !*r.sym);
  return asymmetric ? GptqCheckpointFormat::V2 : GptqCheckpointFormat::V1;
}

std::string gptq_layout_problem(const IntGridOptions& grid, int64_t out, int64_t in) {
  const int64_t k = per_word(grid.bits);
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : "; ") + s; };
  if (out % k != 0) add(fmt::format("{} outputs are not a multiple of {} ({}-bit zero points per int32 word)", out, k, grid.bits));
  if (in % k != 0) add(fmt::format("{} inputs are not a multiple of {} ({}-bit codes per int32 word)", in, k, grid.bits));
  if (grid.group_size != -1 && in % grid.group_size != 0)
    add(fmt::format("{} inputs are not a multiple of the group size {}", in, grid.group_size));
  return why;
}

GptqTensors pack_gptq(const IntQuantized& q) {
  q.validate("GPTQ packing");
  const int bits = q.grid.bits;
  const int64_t k = per_word(bits), out = q.out_features(), in = q.in_features();
  if (in % k != 0 || out % k != 0)
    fail("GPTQ packing: [{}, {}] does not pack {}-bit codes into whole int32 words (both sizes must be multiples "
         "of {})", out, in, bits, k);
  GptqTensors t;
  t.qweight = pack_rows(q.codes.t().contiguous().reshape({in / k, k, out}).permute({0, 2, 1}).reshape({in / k * out, k}),
                        bits)
                  .reshape({in / k, out});
  t.qzeros = pack_rows(q.zeros, bits);
  t.scales = q.scales.to(at::kHalf).contiguous();
  t.g_idx = q.g_idx.to(at::kInt).contiguous();
  return t;
}

IntQuantized unpack_gptq(const GptqTensors& t, const IntGridOptions& grid) {
  const int bits = grid.bits;
  const int64_t k = per_word(bits), in = t.qweight.size(0) * k, out = t.qweight.size(1);
  IntQuantized q;
  q.grid = grid;
  // qweight [in/k, out]: unpack each word into its k input columns.
  q.codes = unpack_rows(t.qweight.t().contiguous(), bits).reshape({out, in}).to(at::kByte);
  q.zeros = unpack_rows(t.qzeros, bits).to(at::kInt);
  q.scales = t.scales.to(at::kFloat);
  q.g_idx = t.g_idx.to(at::kInt);
  return q;
}

bool has_gptq(const io::WeightSource& source, const std::string& module_name) {
  return source.has(module_name + ".qweight");
}

GptqTensors read_gptq(const io::WeightSource& source, const std::string& m, int64_t out, int64_t in,
                      const IntGridOptions& grid, const GptqConfig& config) {
  const int bits = grid.bits;
  const int64_t k = per_word(bits);
  GptqTensors t;
  // `shape` may start with -1: any number of rows (the groups, which the scales decide).
  auto get = [&](const char* suffix, at::ScalarType dtype, std::vector<int64_t> shape) {
    const std::string name = m + suffix;
    if (!source.has(name)) fail("{}: the GPTQ checkpoint has {}.qweight but no {}", m, m, name);
    auto x = source.get_raw(name);
    if (shape[0] == -1 && x.dim() == static_cast<int64_t>(shape.size()) && x.dim() > 0) shape[0] = x.size(0);
    if (x.scalar_type() != dtype || x.sizes() != at::IntArrayRef(shape))
      fail("{}: is {} [{}], expected {} [{}] for a {}-bit GPTQ linear of [{}, {}] (group size {})", name,
           c10::toString(x.scalar_type()), fmt::join(x.sizes(), ", "), c10::toString(dtype), fmt::join(shape, ", "),
           bits, out, in, grid.group_size);
    return x.contiguous();
  };
  if (in % k != 0 || out % k != 0)
    fail("{}: [{}, {}] cannot hold {}-bit GPTQ words (sizes must be multiples of {})", m, out, in, bits, k);
  // The group count follows the scales, as loaders read it: a desc_act checkpoint may hold ceil(in / group) groups.
  t.scales = get(".scales", at::kHalf, {-1, out});
  const auto groups = t.scales.size(0);
  t.qweight = get(".qweight", at::kInt, {in / k, out});
  t.qzeros = get(".qzeros", at::kInt, {groups, out / k});
  if (source.has(m + ".g_idx")) {
    t.g_idx = get(".g_idx", at::kInt, {in});
  } else {  // older checkpoints without act-order omit it
    const int64_t gs = grid.group_size == -1 ? in : grid.group_size;
    t.g_idx = at::div(at::arange(in, at::kLong), gs, "floor").to(at::kInt);
  }
  if (in > 0) {
    const auto [lo, hi] = at::aminmax(t.g_idx);
    if (lo.item<int>() < 0 || hi.item<int>() >= groups)
      fail("{}.g_idx: holds groups {} … {}, but {}.scales has {} groups (a corrupt or mismatched checkpoint)", m,
           lo.item<int>(), hi.item<int>(), m, groups);
  }
  if (config.checkpoint_format == GptqCheckpointFormat::V1) t.qzeros = gptq_zeros_v1_to_v2(t.qzeros, bits);
  return t;
}

void append_gptq(io::NamedTensors& out, const std::string& m, const GptqTensors& t, int bits,
                 GptqCheckpointFormat format) {
  out.emplace_back(m + ".qweight", t.qweight);
  out.emplace_back(m + ".qzeros", format == GptqCheckpointFormat::V1 ? gptq_zeros_v2_to_v1(t.qzeros, bits) : t.qzeros);
  out.emplace_back(m + ".scales", t.scales);
  out.emplace_back(m + ".g_idx", t.g_idx);
}

}  // namespace qtune::quant
