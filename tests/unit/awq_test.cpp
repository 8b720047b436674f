// AWQ's pieces and its checkpoint layout against plain references written here: the grid against a scalar loop,
// the scale search's winner against the candidates' losses, the clipping search against an exhaustive one, the
// GEMM layout's packing against words written out by hand, and the conversion to GPTQ's layout against the values.
#include <gtest/gtest.h>

#include <cmath>

#include "qtune/kernels/dequant_gptq.h"
#include "qtune/quant/awq.h"
#include "qtune/quant/awq_format.h"
#include "qtune/quant/gptq_weight.h"
#include "test_util.h"

namespace qtune::quant {
namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

TEST(Awq, GridIsAwqsRoundToNearestPerGroup) {
  auto g = gen(3);
  const auto w = at::randn({8, 64}, g, at::kFloat);
  for (const bool sym : {false, true}) {
    const IntGridOptions grid{4, 16, sym};
    const auto values = awq_fake_quantize(w, grid);
    const auto q = awq_quantize(w, grid);
    EXPECT_TRUE(at::equal(q.dequantize(), values));
    const auto* x = w.data_ptr<float>();
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t k = 0; k < 4; ++k) {
        float lo = x[r * 64 + k * 16], hi = lo;
        for (int64_t i = 0; i < 16; ++i) lo = std::min(lo, x[r * 64 + k * 16 + i]), hi = std::max(hi, x[r * 64 + k * 16 + i]);
        const float scale = sym ? std::max(std::max(std::fabs(lo), std::fabs(hi)), 1e-5f) / 7.0f
                                : std::max(hi - lo, 1e-5f) / 15.0f;
        const float zero = sym ? 8.0f : std::min(15.0f, std::max(0.0f, -std::nearbyint(lo / scale)));
        EXPECT_FLOAT_EQ(q.scales[k][r].item<float>(), scale);
        EXPECT_EQ(q.zeros[k][r].item<int>(), static_cast<int>(zero));
        for (int64_t i = 0; i < 16; ++i) {
          const float v = x[r * 64 + k * 16 + i];
          const float code = sym ? std::min(7.0f, std::max(-8.0f, std::nearbyint(v / scale))) + 8.0f
                                 : std::min(15.0f, std::max(0.0f, std::nearbyint(v / scale) + zero));
          EXPECT_EQ(q.codes[r][k * 16 + i].item<int>(), static_cast<int>(code)) << r << " " << i;
        }
      }
  }
}

TEST(Awq, ScaleSearchKeepsTheCandidateWithTheLeastLossAndScalesNormaliseToUnitGeometricRange) {
  auto g = gen(5);
  const auto x_mean = at::rand({32}, g) * 4 + 0.1, w_mean = at::rand({32}, g) * 0.5 + 0.1;
  AwqOptions o;
  const auto found = awq_search_scales(x_mean, w_mean, o, [&](const at::Tensor& s) {
    return std::fabs(s.max().item<double>() - 3.0);  // some function of the candidate
  });
  ASSERT_EQ(found.losses.size(), 20u);
  const auto best = std::min_element(found.losses.begin(), found.losses.end()) - found.losses.begin();
  EXPECT_DOUBLE_EQ(found.ratio, static_cast<double>(best) / 20);
  EXPECT_DOUBLE_EQ(found.loss, found.losses[best]);
  EXPECT_TRUE(at::equal(found.scales, awq_scales(x_mean, w_mean, found.ratio, true)));
  const auto s = awq_scales(x_mean, w_mean, 0.5, true);
  EXPECT_NEAR((s.max() * s.min()).item<double>(), 1.0, 1e-5);
  // α = 0 without duo scaling is no scaling at all.
  EXPECT_TRUE(at::allclose(awq_scales(x_mean, w_mean, 0, false), at::ones({32})));
}

TEST(Awq, ClippingChoosesTheShrinkWithTheLeastOutputErrorPerGroup) {
  auto g = gen(7);
  const auto w = at::randn({16, 64}, g, at::kFloat).pow(3);  // heavy tails: clipping pays in some groups
  const auto x = at::randn({256, 64}, g, at::kFloat);
  AwqOptions o;
  o.grid = {4, 32, false};
  const auto bounds = awq_clip_bounds(w, x, o);
  ASSERT_EQ(bounds.sizes(), (std::vector<int64_t>{16, 2}));
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t k = 0; k < 2; ++k) {
      const auto wg = w[r].slice(0, k * 32, k * 32 + 32), xg = x.slice(1, k * 32, k * 32 + 32);
      const auto ref = xg.matmul(wg);
      const double max = wg.abs().max().item<double>();
      double best_err = 1e30, best_bound = 0;
      for (int i = 0; i < 10; ++i) {
        const double b = max * (1 - i / 20.0);
        const auto q = awq_fake_quantize(wg.clamp(-b, b).view({1, 32}), {4, 32, false}).view({32});
        const double err = (xg.matmul(q) - ref).pow(2).mean().item<double>();
        if (err < best_err * (1 - 1e-6)) best_err = err, best_bound = b;
      }
      EXPECT_NEAR(bounds[r][k].item<double>(), best_bound, 1e-6 * max) << r << " " << k;
    }
  const auto group_max = w.abs().view({16, 2, 32}).amax(-1);
  EXPECT_GT((bounds < group_max).sum().item<int64_t>(), 0);
  const auto clipped = awq_apply_clip(w, bounds, 32);
  EXPECT_TRUE(at::equal(clipped.abs().view({16, 2, 32}).amax(-1), at::minimum(group_max, bounds)));
}

TEST(AwqFormat, PacksEightOutputsPerWordInAwqsOrder) {
  IntQuantized q;
  q.grid = {4, 8, false};
  q.codes = at::arange(8, at::kByte).view({8, 1}).repeat({1, 8});  // output o holds code o in every column
  q.scales = at::full({1, 8}, 0.5, at::kFloat);
  q.zeros = at::arange(8, at::kInt).view({1, 8});
  q.g_idx = at::zeros({8}, at::kInt);
  const auto t = pack_awq(q);
  ASSERT_EQ(t.qweight.sizes(), (std::vector<int64_t>{8, 1}));
  // Field j (bits 4j) holds output kAwqOrder[j] = 0, 2, 4, 6, 1, 3, 5, 7.
  EXPECT_TRUE((t.qweight == 0x75316420).all().item<bool>());
  EXPECT_EQ(t.qzeros[0][0].item<int>(), 0x75316420);
  const auto back = unpack_awq(t, q.grid);
  EXPECT_TRUE(at::equal(back.codes, q.codes));
  EXPECT_TRUE(at::equal(back.zeros, q.zeros));
}

TEST(AwqFormat, ConvertsToGptqsLayoutWithTheSameValues) {
  auto g = gen(9);
  const auto w = at::randn({48, 128}, g, at::kFloat);
  for (const bool sym : {false, true}) {
    const IntGridOptions grid{4, 32, sym};
    const auto q = awq_quantize(w, grid);
    const auto t = pack_awq(q);
    const auto expected = unpack_awq(t, grid).dequantize();  // fp16 scales
    const GptqWeight weight(awq_to_gptq(t, grid), grid, "awq");
    EXPECT_EQ(weight.format(), "awq-int4-g32");
    EXPECT_TRUE(at::equal(weight.dequantize(at::kFloat), expected));
    EXPECT_TRUE(at::allclose(expected, q.dequantize(), 1e-3, 1e-4));
  }
  IntQuantized act = awq_quantize(w, {4, 32, false});
  act.g_idx = act.g_idx.flip(0).contiguous();
  EXPECT_NE(test::error_of([&] { pack_awq(act); }).find("not consecutive"), std::string::npos);
}

TEST(AwqFormat, ConfigReadsWhatLoadersWriteAndRefusesWhatItCannotRead) {
  const auto c = AwqConfig::from_json(
      {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 64}, {"zero_point", true}, {"version", "GEMM"}},
      "config.json");
  EXPECT_EQ(c.grid.group_size, 64);
  EXPECT_FALSE(c.grid.sym);
  const auto back = AwqConfig::from_json(c.to_json(), "x");
  EXPECT_EQ(back.grid.group_size, 64);
  EXPECT_FALSE(back.grid.sym);
  auto err = [](nlohmann::json j) { return test::error_of([&] { AwqConfig::from_json(j, "m/config.json"); }); };
  EXPECT_NE(err({{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"version", "gemv"}})
                .find("m/config.json: quantization_config.version \"gemv\""),
            std::string::npos);
  EXPECT_NE(err({{"quant_method", "awq"}, {"bits", 8}, {"group_size", 128}}).find("4-bit AWQ GEMM"), std::string::npos);
  EXPECT_NE(err({{"quant_method", "awq"}, {"bits", 4}}).find("no 'group_size'"), std::string::npos);
}

}  // namespace
}  // namespace qtune::quant
