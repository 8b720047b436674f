// qtune's 4-bit quantization against bitsandbytes on the same tensors (the oracle fixture
// tests/oracle/bnb_4bit.py ran bitsandbytes on CPU): codes, absmax, nested state and dequantized values
// equal bit for bit, for NF4 and FP4, with and without double quantization, several block sizes.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/io/safetensors.h"
#include "qtune/kernels/dequant.h"
#include "qtune/quant/nf4.h"
#include "test_util.h"

namespace {

using namespace qtune;

std::vector<nlohmann::json> cases() {
  std::ifstream in(test::oracle_dir() + "/bnb_4bit/manifest.json");
  EXPECT_TRUE(in.good()) << "bitsandbytes oracle output missing: run through ctest";
  return nlohmann::json::parse(in).get<std::vector<nlohmann::json>>();
}

quant::Quantize4Options options_of(const nlohmann::json& c) {
  quant::Quantize4Options opts;
  opts.format = c["format"] == "nf4" ? quant::Format4::NF4 : quant::Format4::FP4;
  opts.blocksize = c["blocksize"];
  opts.double_quant = c["double_quant"];
  return opts;
}

TEST(OracleBnb4bit, QuantizedStateEqualsBitsandbytes) {
  QTUNE_REQUIRE_ORACLE();
  auto all = cases();
  ASSERT_GE(all.size(), 8u);
  int64_t nested_codes = 0, bnb_not_nearest = 0;
  for (const auto& c : all) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto ref = io::SafetensorsFile::open(c["file"]);
    const auto opts = options_of(c);
    auto state = quant::quantize_4bit(ref->tensor("input"), opts);
    EXPECT_TRUE(test::bitwise_equal(state.code, ref->tensor("quant_map")));
    EXPECT_TRUE(test::bitwise_equal(state.packed, ref->tensor("packed"))) << "packed codes differ";
    if (!opts.double_quant) {
      EXPECT_TRUE(test::bitwise_equal(state.absmax, ref->tensor("absmax")));
      continue;
    }
    ASSERT_TRUE(state.nested.has_value());
    EXPECT_TRUE(test::bitwise_equal(state.nested->absmax, ref->tensor("nested_absmax")));
    EXPECT_TRUE(test::bitwise_equal(state.nested->map, ref->tensor("nested_quant_map"))) << "dynamic map differs";
    EXPECT_EQ(state.nested->offset, ref->tensor("offset").item<float>());
    // Nested codes: ours are the nearest map value to (absmax - offset) / nested absmax. Where bitsandbytes'
    // approximate CPU search chose otherwise, its choice must be strictly farther; nowhere else may we differ.
    auto fp32_absmax = quant::quantize_4bit(ref->tensor("input"), {opts.format, opts.blocksize, false}).absmax;
    auto normed = (fp32_absmax - state.nested->offset) /
                  state.nested->absmax.repeat_interleave(256).narrow(0, 0, fp32_absmax.numel());
    auto map = state.nested->map;
    auto ours = state.nested->codes.to(at::kLong), theirs = ref->tensor("absmax").to(at::kLong);
    auto our_dist = (normed - map.index({ours})).abs(), their_dist = (normed - map.index({theirs})).abs();
    auto differ = ours != theirs;
    EXPECT_TRUE((their_dist.masked_select(differ) > our_dist.masked_select(differ)).all().item<bool>())
        << "where codes differ, bitsandbytes' choice must be the farther one";
    nested_codes += ours.numel();
    bnb_not_nearest += differ.sum().item<int64_t>();
  }
  std::printf("nested absmax codes: %lld, of which bitsandbytes' CPU search did not pick the nearest: %lld\n",
              static_cast<long long>(nested_codes), static_cast<long long>(bnb_not_nearest));
  EXPECT_LT(static_cast<double>(bnb_not_nearest), 0.01 * static_cast<double>(nested_codes));
}

// Our dequantize kernel on bitsandbytes' own state gives bitsandbytes' values, for every output dtype.
TEST(OracleBnb4bit, DequantizeOfBitsandbytesStateEqualsBitsandbytes) {
  QTUNE_REQUIRE_ORACLE();
  for (const auto& c : cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto ref = io::SafetensorsFile::open(c["file"]);
    const auto opts = options_of(c);
    quant::Quant4State state;
    state.format = opts.format;
    state.blocksize = opts.blocksize;
    state.shape = ref->tensor("input").sizes().vec();
    state.packed = ref->tensor("packed").clone();
    state.code = ref->tensor("quant_map").clone();
    if (opts.double_quant)
      state.nested = quant::NestedAbsmax{ref->tensor("absmax").clone(), ref->tensor("nested_absmax").clone(),
                                         ref->tensor("nested_quant_map").clone(), 256, ref->tensor("offset").item<float>()};
    else
      state.absmax = ref->tensor("absmax").clone();
    for (auto [dtype, key] : {std::pair{at::kFloat, "dequant_f32"}, std::pair{at::kBFloat16, "dequant_bf16"},
                              std::pair{at::kHalf, "dequant_f16"}})
      EXPECT_TRUE(test::bitwise_equal(kernels::dequantize_4bit(state, dtype), ref->tensor(key))) << key;
  }
}

TEST(OracleBnb4bit, DynamicMapEqualsBitsandbytes) {
  QTUNE_REQUIRE_ORACLE();
  for (const auto& c : cases()) {
    if (!c["double_quant"].get<bool>()) continue;
    auto ref = io::SafetensorsFile::open(c["file"]);
    EXPECT_TRUE(test::bitwise_equal(quant::dynamic_map_signed(), ref->tensor("nested_quant_map")));
    return;
  }
  FAIL() << "no double-quant case in the oracle";
}

}  // namespace
