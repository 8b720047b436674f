#include "qtune/quant/awq_format.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>

#include "qtune/quant/packed_words.h"
#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {
namespace {

constexpr int kBits = 4;
constexpr int64_t kPerWord = 8;

// [rows, out] natural order → each run of 8 columns in kAwqOrder, and back.
at::Tensor interleave(const at::Tensor& v) {
  const auto order = at::tensor(std::vector<int64_t>(kAwqOrder.begin(), kAwqOrder.end()), at::kLong);
  return v.reshape({v.size(0), -1, kPerWord}).index_select(2, order).reshape({v.size(0), -1});
}
at::Tensor deinterleave(const at::Tensor& v) {
  std::vector<int64_t> inverse(kPerWord);
  for (int64_t j = 0; j < kPerWord; ++j) inverse[kAwqOrder[j]] = j;
  return v.reshape({v.size(0), -1, kPerWord}).index_select(2, at::tensor(inverse, at::kLong)).reshape({v.size(0), -1});
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

AwqConfig AwqConfig::from_json(const nlohmann::json& q, const std::string& where) {
  AwqConfig c;
  auto need_int = [&](const char* key) -> int64_t {
    if (!q.contains(key)) fail("{}: quantization_config has no '{}' (an AWQ checkpoint states it)", where, key);
    if (!q[key].is_number_integer()) fail("{}: quantization_config.{} must be an integer, got {}", where, key, json_show(q[key]));
    return q[key].get<int64_t>();
  };
  const auto bits = need_int("bits");
  if (bits != kBits)
    fail("{}: quantization_config.bits is {}; qtune reads 4-bit AWQ GEMM checkpoints (the layout AutoAWQ, "
         "transformers and vLLM share)", where, bits);
  c.grid.bits = kBits;
  c.grid.group_size = need_int("group_size");
  if (q.contains("zero_point") && !q["zero_point"].is_null()) {
    if (!q["zero_point"].is_boolean())
      fail("{}: quantization_config.zero_point must be true or false, got {}", where, json_show(q["zero_point"]));
    c.grid.sym = !q["zero_point"].get<bool>();
  }
  for (const char* key : {"version", "format"}) {
    if (!q.contains(key) || q[key].is_null()) continue;
    const auto v = q[key].is_string() ? lower(q[key].get<std::string>()) : "";
    if (v != "gemm")
      fail("{}: quantization_config.{} {} is not the AWQ layout qtune reads (expected \"gemm\"; gemv, marlin and "
           "exllama are repacked forms: convert to gemm with AutoAWQ or gptqmodel first)", where, key, json_show(q[key]));
  }
  if (c.grid.group_size <= 0)
    fail("{}: quantization_config.group_size {} is not an AWQ group (expected 32, 64 or 128 input columns)", where,
         c.grid.group_size);
  try {
    c.grid.validate("AWQ");
  } catch (const Error& e) {
    fail("{}: quantization_config: {}", where, e.what());
  }
  return c;
}

nlohmann::json AwqConfig::to_json() const {
  return {{"quant_method", "awq"},      {"bits", grid.bits},    {"group_size", grid.group_size},
          {"zero_point", !grid.sym},    {"version", "gemm"},    {"format", "gemm"},
          {"desc_act", false},          {"pack_dtype", "int32"}, {"lm_head", false},
          {"meta", {{"quantizer", {"qtune"}}}}};
}

AwqTensors pack_awq(const IntQuantized& q) {
  q.validate("AWQ packing");
  if (q.grid.bits != kBits) fail("AWQ packing: the GEMM layout holds 4-bit codes, not {}-bit", q.grid.bits);
  const int64_t out = q.out_features(), in = q.in_features(), g = q.grid.group_size;
  if (out % kPerWord != 0) fail("AWQ packing: out_features {} is not a multiple of 8", out);
  if (g <= 0 || in % g != 0) fail("AWQ packing: group size {} does not divide in_features {}", g, in);
  if (!at::equal(q.g_idx.to(at::kLong), at::div(at::arange(in, at::kLong), g, "floor")))
    fail("AWQ packing: the groups are not consecutive input columns (act-order has no AWQ layout)");
  AwqTensors t;
  t.qweight = pack_rows(interleave(q.codes.t().contiguous()), kBits);
  t.qzeros = pack_rows(interleave(q.zeros), kBits);
  t.scales = q.scales.to(at::kHalf).contiguous();
  return t;
}

IntQuantized unpack_awq(const AwqTensors& t, const IntGridOptions& grid) {
  IntQuantized q;
  q.grid = grid;
  const int64_t in = t.qweight.size(0);
  q.codes = deinterleave(unpack_rows(t.qweight, kBits)).t().contiguous().to(at::kByte);
  q.zeros = deinterleave(unpack_rows(t.qzeros, kBits)).to(at::kInt).contiguous();
  q.scales = t.scales.to(at::kFloat).contiguous();
  q.g_idx = at::div(at::arange(in, at::kLong), grid.group_size, "floor").to(at::kInt);
  return q;
}

AwqTensors read_awq(const io::WeightSource& source, const std::string& m, int64_t out, int64_t in,
                    const AwqConfig& config) {
  const int64_t g = config.grid.group_size;
  if (out % kPerWord != 0 || in % g != 0)
    fail("{}: [{}, {}] cannot hold AWQ words with group size {} (out must be a multiple of 8, in of the group)", m,
         out, in, g);
  auto get = [&](const char* suffix, at::ScalarType dtype, std::vector<int64_t> shape) {
    const std::string name = m + suffix;
    if (!source.has(name)) fail("{}: the AWQ checkpoint has {}.qweight but no {}", m, m, name);
    auto x = source.get_raw(name);
    if (x.scalar_type() != dtype || x.sizes() != at::IntArrayRef(shape))
      fail("{}: is {} [{}], expected {} [{}] for a 4-bit AWQ linear of [{}, {}] (group size {})", name,
           c10::toString(x.scalar_type()), fmt::join(x.sizes(), ", "), c10::toString(dtype), fmt::join(shape, ", "),
           out, in, g);
    return x.contiguous();
  };
  AwqTensors t;
  t.qweight = get(".qweight", at::kInt, {in, out / kPerWord});
  t.qzeros = get(".qzeros", at::kInt, {in / g, out / kPerWord});
  t.scales = get(".scales", at::kHalf, {in / g, out});
  return t;
}

void append_awq(io::NamedTensors& out, const std::string& m, const AwqTensors& t) {
  out.emplace_back(m + ".qweight", t.qweight);
  out.emplace_back(m + ".qzeros", t.qzeros);
  out.emplace_back(m + ".scales", t.scales);
}

GptqTensors awq_to_gptq(const AwqTensors& t, const IntGridOptions& grid) { return pack_gptq(unpack_awq(t, grid)); }

}  // namespace qtune::quant
