// GPTQ and its integer grid against plain references written here: the group fit and round-to-nearest against a
// scalar loop, the blocked GPTQ against an unblocked double-precision one, the GPTQ layout's packing against words
// written out by hand, and the dequantize kernel against IntQuantized::dequantize.
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include <cmath>

#include "qtune/kernels/dequant.h"
#include "qtune/kernels/dequant_gptq.h"
#include "qtune/quant/gptq.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/gptq_weight.h"
#include "qtune/quant/int_grid.h"
#include "test_util.h"

namespace qtune::quant {
namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// Inputs with correlated columns and uneven scales, as a layer's activations have; H = (2/n) XᵀX.
at::Tensor hessian_of(int64_t in, int64_t n, uint64_t seed) {
  auto g = gen(seed);
  const auto mix = at::randn({in, in}, g, at::kFloat) * 0.3 + at::eye(in);
  const auto x = at::randn({n, in}, g, at::kFloat).matmul(mix) * (at::rand({in}, g) * 3 + 0.1);
  return x.t().matmul(x) * (2.0 / static_cast<double>(n));
}

// find_params for one row of one group, in scalar double arithmetic (scales then rounded to fp32 as torch does).
std::pair<float, float> scalar_grid(const float* x, int64_t k, int bits, bool sym) {
  float lo = 0, hi = 0;
  for (int64_t i = 0; i < k; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  if (sym) {
    hi = std::max(std::fabs(lo), hi);
    if (lo < 0) lo = -hi;
  }
  if ((sym && hi == 0) || (!sym && lo == 0 && hi == 0)) lo = -1, hi = 1;
  const float maxq = static_cast<float>((1 << bits) - 1);
  const float scale = (hi - lo) / maxq;
  const float zero = sym ? (maxq + 1) / 2 : std::nearbyint(-lo / scale);
  return {scale, zero};
}

TEST(IntGrid, RoundToNearestEqualsAScalarLoop) {
  for (const bool sym : {true, false})
    for (const int bits : {2, 4, 8}) {
      auto g = gen(3);
      auto w = at::randn({24, 96}, g, at::kFloat);
      w.narrow(1, 32, 32).abs_();                 // a group with no negative value
      w.narrow(1, 64, 32).select(0, 5).zero_();   // an all-zero group row
      const IntGridOptions o{bits, 32, sym};
      const auto q = rtn_quantize(w, o);
      q.validate("rtn");
      const auto wa = w.accessor<float, 2>();
      for (int64_t r = 0; r < 24; ++r)
        for (int64_t gi = 0; gi < 3; ++gi) {
          const auto [scale, zero] = scalar_grid(&wa[r][gi * 32], 32, bits, sym);
          ASSERT_EQ(q.scales[gi][r].item<float>(), scale) << "bits " << bits << " sym " << sym;
          ASSERT_EQ(q.zeros[gi][r].item<int>(), static_cast<int>(zero));
          for (int64_t c = gi * 32; c < gi * 32 + 32; ++c) {
            const float code = std::min<float>(std::max<float>(std::nearbyint(wa[r][c] / scale) + zero, 0),
                                               static_cast<float>(o.max_code()));
            ASSERT_EQ(q.codes[r][c].item<int>(), static_cast<int>(code)) << r << "," << c;
          }
        }
      // Round to nearest on the grid: every value within half a step of the weight where it is not clipped.
      const auto err = (q.dequantize() - w).abs();
      const auto half_step = q.scales.index_select(0, q.g_idx.to(at::kLong)).t() / 2;
      const auto inside = (q.codes > 0).logical_and(q.codes < o.max_code());
      EXPECT_TRUE((err.masked_select(inside) <= half_step.masked_select(inside) * (1 + 1e-5)).all().item<bool>());
    }
}

TEST(IntGrid, SymmetricZeroPointIsHalfTheRangeAndGroupsMustDivide) {
  auto w = at::randn({8, 64}, at::kFloat);
  const auto q = rtn_quantize(w, {4, 64, true});
  EXPECT_TRUE((q.zeros == 8).all().item<bool>());
  EXPECT_EQ(q.scales.size(0), 1);
  EXPECT_NE(test::error_of([&] { rtn_quantize(w, {4, 48, true}); }).find("not a multiple of the group size 48"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { rtn_quantize(w, {3, 32, true}); }).find("bits must be 2, 4 or 8"), std::string::npos);
  const auto row = rtn_quantize(w, {4, -1, false});
  EXPECT_EQ(row.scales.size(0), 1);
  EXPECT_TRUE((row.g_idx == 0).all().item<bool>());
}

// The unblocked algorithm of the GPTQ paper (Algorithm 1 without lazy batches), in double precision: quantize
// column j, then subtract its scaled error from every later column through row j of the Cholesky factor of H⁻¹.
at::Tensor reference_gptq(const at::Tensor& w_in, const at::Tensor& h_in, const IntGridOptions& o, double damp) {
  auto w = w_in.to(at::kDouble).clone();
  auto h = h_in.to(at::kDouble).clone();
  h.diagonal().add_(damp * h.diagonal().mean());
  const auto u = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h)), /*upper=*/true);
  const int64_t cols = w.size(1), gs = o.group_size;
  auto q = at::zeros_like(w);
  GroupGrid grid;
  for (int64_t j = 0; j < cols; ++j) {
    if (j % gs == 0) {
      const auto g = fit_group_grid(w.narrow(1, j, gs).to(at::kFloat), o);
      grid = {g.scale.to(at::kDouble), g.zero.to(at::kDouble)};
    }
    const auto col = w.select(1, j).unsqueeze(1);
    const auto qj = grid_values(grid_codes(col, grid, o.max_code()), grid).flatten();
    q.select(1, j).copy_(qj);
    const auto e = (w.select(1, j) - qj) / u[j][j];
    w.narrow(1, j, cols - j).sub_(e.unsqueeze(1) * u[j].narrow(0, j, cols - j).unsqueeze(0));
  }
  return q;
}

TEST(Gptq, LazyBlocksComputeWhatTheUnblockedReferenceDoes) {
  // Group = block start (128 | 128): both fit every group on fully updated columns, so they agree up to rounding.
  auto g = gen(5);
  const auto w = at::randn({48, 256}, g, at::kFloat) * 0.05;
  const auto h = hessian_of(256, 1024, 6);
  GptqOptions o;
  o.grid = {4, 128, false};
  const auto r = gptq_quantize(w, h, o);
  const auto ref = reference_gptq(w, h, o.grid, o.damp).to(at::kFloat);
  const auto same = (r.dequantized - ref).abs() <= 1e-5;
  EXPECT_GT(same.to(at::kFloat).mean().item<float>(), 0.995) << "codes flipped at rounding ties only";
  EXPECT_NEAR(output_error(w, r.dequantized, h), output_error(w, ref, h), 1e-3 * output_error(w, ref, h));
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputs) {
  for (const bool act_order : {false, true})
    for (const int64_t group : {int64_t{32}, int64_t{128}, int64_t{-1}}) {
      auto g = gen(7);
      const auto w = at::randn({64, 256}, g, at::kFloat) * 0.05;
      const auto h = hessian_of(256, 2048, 8);
      GptqOptions o;
      o.grid = {4, group, true};
      o.act_order = act_order;
      const auto r = gptq_quantize(w, h, o);
      r.quantized.validate("gptq");
      const auto rtn = rtn_quantize(w, o.grid);
      EXPECT_LT(output_error(w, r.dequantized, h), 0.8 * output_error(w, rtn.dequantize(), h))
          << "group " << group << " act_order " << act_order;
      // The codes, scales, zeros and g_idx describe exactly the values the algorithm produced.
      EXPECT_TRUE(at::allclose(r.quantized.dequantize(), r.dequantized, 0, 1e-6));
    }
}

TEST(Gptq, WithAnIdentityHessianItIsRoundToNearest) {
  // H = I: the Cholesky factor of H⁻¹ is diagonal, no error flows to other columns.
  auto g = gen(9);
  const auto w = at::randn({16, 64}, g, at::kFloat);
  GptqOptions o;
  o.grid = {4, 32, false};
  o.damp = 0;
  const auto r = gptq_quantize(w, at::eye(64, at::kFloat), o);
  const auto rtn = rtn_quantize(w, o.grid);
  EXPECT_TRUE(at::equal(r.quantized.codes, rtn.codes));
  EXPECT_TRUE(at::equal(r.quantized.scales, rtn.scales));
  EXPECT_TRUE(at::equal(r.quantized.zeros, rtn.zeros));
}

TEST(Gptq, ActOrderPermutesGroupsAndStaticGroupsKeepColumnOrder) {
  auto g = gen(11);
  const auto w = at::randn({16, 64}, g, at::kFloat);
  const auto h = hessian_of(64, 512, 12);
  GptqOptions o;
  o.grid = {4, 16, true};
  o.act_order = true;
  const auto r = gptq_quantize(w, h, o);
  // Columns by descending H_ii: the 16 largest diagonal entries form group 0.
  const auto perm = at::argsort(h.diagonal(), false, 0, true);
  EXPECT_TRUE((r.quantized.g_idx.index_select(0, perm.narrow(0, 0, 16)) == 0).all().item<bool>());
  EXPECT_EQ(at::bincount(r.quantized.g_idx.to(at::kLong)).min().item<int64_t>(), 16);
  o.static_groups = true;
  const auto s = gptq_quantize(w, h, o);
  EXPECT_TRUE(at::equal(s.quantized.g_idx, at::div(at::arange(64, at::kLong), 16, "floor").to(at::kInt)));
  EXPECT_TRUE(at::allclose(s.quantized.dequantize(), s.dequantized, 0, 1e-6));
  // Static groups are fitted on the original weight: the same scales as round-to-nearest.
  EXPECT_TRUE(at::equal(s.quantized.scales, rtn_quantize(w, o.grid).scales));
}

TEST(Gptq, DeadColumnsAreZeroedAndASingularHessianRaisesTheDampening) {
  auto g = gen(13);
  const auto w = at::randn({8, 32}, g, at::kFloat);
  auto x = at::randn({4, 32}, g, at::kFloat);  // rank 4 of 32: singular
  x.select(1, 3).zero_();
  const auto h = x.t().matmul(x);
  GptqOptions o;
  o.grid = {4, 32, true};
  o.damp = 0;
  const auto r = gptq_quantize(w, h, o);
  EXPECT_EQ(r.dead_columns, 1);
  EXPECT_GT(r.damp, 0) << "raised until H + damp is positive definite";
  EXPECT_TRUE((r.dequantized.select(1, 3) == 0).all().item<bool>());
  EXPECT_NE(test::error_of([&] { gptq_quantize(w, at::eye(16), o); }).find("Hessian must be [32, 32]"),
            std::string::npos);
}

TEST(GptqFormat, PacksCodesIntoWordsAsTheLayoutSays) {
  IntQuantized q;
  q.grid = {4, 8, false};
  q.codes = at::arange(8, at::kByte).repeat({8, 1});  // every row 0 … 7
  q.scales = at::full({1, 8}, 0.5, at::kFloat);
  q.zeros = at::arange(8, at::kInt).view({1, 8});
  q.g_idx = at::zeros({8}, at::kInt);
  const auto t = pack_gptq(q);
  ASSERT_EQ(t.qweight.sizes(), (std::vector<int64_t>{1, 8}));
  EXPECT_TRUE((t.qweight == 0x76543210).all().item<bool>());  // input i at 4·i bits
  EXPECT_EQ(t.qzeros[0][0].item<int>(), 0x76543210);
  // v1 stores zero − 1 by subtracting 0x11111111 from the word: the zero of 0 borrows.
  EXPECT_EQ(static_cast<uint32_t>(gptq_zeros_v2_to_v1(t.qzeros, 4)[0][0].item<int>()), 0x76543210u - 0x11111111u);
  EXPECT_TRUE(at::equal(gptq_zeros_v1_to_v2(gptq_zeros_v2_to_v1(t.qzeros, 4), 4), t.qzeros));
  EXPECT_EQ(t.scales.scalar_type(), at::kHalf);
}

TEST(GptqFormat, UnpackInvertsPackForEveryWidthAndTheKernelDequantizesIt) {
  for (const int bits : {2, 4, 8})
    for (const bool act_order : {false, true}) {
      auto g = gen(17);
      const auto w = at::randn({32, 128}, g, at::kFloat);
      GptqOptions o;
      o.grid = {bits, 32, false};
      o.act_order = act_order;
      const auto q = gptq_quantize(w, hessian_of(128, 256, 18), o).quantized;
      const auto t = pack_gptq(q);
      const auto back = unpack_gptq(t, o.grid);
      EXPECT_TRUE(at::equal(back.codes, q.codes));
      EXPECT_TRUE(at::equal(back.zeros, q.zeros));
      EXPECT_TRUE(at::equal(back.g_idx, q.g_idx));
      // The kernel computes fp16 scale × (code − zero) exactly, then rounds once to the output type.
      const auto expected = back.dequantize();
      EXPECT_TRUE(at::equal(kernels::dequantize_gptq(t, bits, at::kFloat), expected)) << bits;
      EXPECT_TRUE(at::equal(kernels::dequantize_gptq(t, bits, at::kHalf), expected.to(at::kHalf)));
      EXPECT_TRUE(at::equal(kernels::dequantize_gptq(t, bits, at::kBFloat16), expected.to(at::kBFloat16)));
      const GptqWeight weight(t, o.grid);
      EXPECT_EQ(weight.format(), "gptq-int" + std::to_string(bits) + "-g32");
      EXPECT_NEAR(weight.bits_per_parameter(), bits + (16.0 + bits) / 32 + 32.0 / 32, 1e-9);
    }
}

TEST(GptqFormat, CudaKernelEqualsTheCpuOne) {
  if (!torch::cuda::is_available() || !kernels::cuda_kernels_built()) GTEST_SKIP() << "no CUDA device";
  for (const int bits : {2, 4, 8}) {
    auto g = gen(19);
    GptqOptions o;
    o.grid = {bits, 64, false};
    o.act_order = true;
    const auto t = pack_gptq(gptq_quantize(at::randn({96, 320}, g, at::kFloat), hessian_of(320, 640, 20), o).quantized);
    GptqWeight weight(t, o.grid);
    weight.to(at::Device(at::kCUDA));
    for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
      EXPECT_TRUE(at::equal(weight.dequantize(dtype).cpu(), kernels::dequantize_gptq(t, bits, dtype))) << bits;
  }
}

TEST(GptqFormat, ConfigReadsWhatLoadersWriteAndRefusesWhatItCannotRead) {
  const auto c = GptqConfig::from_json(
      {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 64}, {"desc_act", true}, {"sym", false},
       {"checkpoint_format", "gptq_v2"}},
      "config.json");
  EXPECT_EQ(c.grid.group_size, 64);
  EXPECT_TRUE(c.desc_act);
  EXPECT_FALSE(c.grid.sym);
  EXPECT_EQ(c.checkpoint_format, GptqCheckpointFormat::V2);
  EXPECT_EQ(GptqConfig::from_json(c.to_json(), "x").grid.group_size, 64);
  EXPECT_NE(test::error_of([] {
              GptqConfig::from_json({{"quant_method", "gptq"}, {"bits", 4}, {"checkpoint_format", "marlin"}}, "m/config.json");
            }).find("m/config.json: quantization_config.checkpoint_format \"marlin\""),
            std::string::npos);
  EXPECT_NE(test::error_of([] { GptqConfig::from_json({{"quant_method", "gptq"}, {"bits", 3}}, "c"); }).find("bits must be 2, 4 or 8"),
            std::string::npos);
}

TEST(GptqFormat, DynamicRulesOverrideTheGridOrLeaveAModuleUnquantizedFirstMatchWins) {
  const auto c = GptqConfig::from_json(
      {{"quant_method", "gptq"},
       {"bits", 4},
       {"group_size", 128},
       {"dynamic",
        {{"-:model\\.layers\\.1\\.self_attn\\.q_proj", nlohmann::json::object()},
         {"+:.*\\.mlp\\.down_proj", {{"bits", 8}, {"group_size", 32}}},
         {".*layers\\.1\\..*", {{"bits", 2}}}}}},
      "config.json");
  ASSERT_EQ(c.dynamic.size(), 3u);
  EXPECT_FALSE(c.grid_for("model.layers.1.self_attn.q_proj").has_value());
  const auto down = c.grid_for("model.layers.1.mlp.down_proj");  // the down_proj rule comes first
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->bits, 8);
  EXPECT_EQ(down->group_size, 32);
  EXPECT_EQ(c.grid_for("model.layers.1.self_attn.k_proj")->bits, 2);
  EXPECT_EQ(c.grid_for("model.layers.0.self_attn.k_proj")->bits, 4);
  EXPECT_EQ(c.grid_for("model.layers.0.self_attn.k_proj")->group_size, 128);
  // Patterns match from the start of the name, as gptqmodel's re.match does: "mlp" alone matches nothing here.
  GptqConfig d = c;
  d.dynamic.clear();
  d.add_override("model.layers.0.mlp.up_proj", {8, 64, false});
  d.add_skip("model.layers.2.mlp.up_proj");
  const auto back = GptqConfig::from_json(d.to_json(), "x");
  EXPECT_EQ(back.grid_for("model.layers.0.mlp.up_proj")->bits, 8);
  EXPECT_FALSE(back.grid_for("model.layers.0.mlp.up_proj")->sym);
  EXPECT_FALSE(back.grid_for("model.layers.2.mlp.up_proj").has_value());
  EXPECT_EQ(back.grid_for("model.layers.0Xmlp.up_proj")->bits, 4);  // the dots are escaped
  EXPECT_EQ(d.to_json()["dynamic"].begin().key(), "+:model\\.layers\\.0\\.mlp\\.up_proj");
  EXPECT_NE(test::error_of([] {
              GptqConfig::from_json({{"quant_method", "gptq"}, {"bits", 4}, {"dynamic", {{"+:(", {{"bits", 8}}}}}}, "c");
            }).find("not a regular expression"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              GptqConfig::from_json({{"quant_method", "gptq"}, {"bits", 4}, {"dynamic", {{"+:x", {{"bits", 3}}}}}}, "c");
            }).find("bits must be 2, 4 or 8"),
            std::string::npos);
}

// A NaN or inf is refused where it is, not rounded into a NaN scale (round to nearest) or spread along its row by the
// error feedback (GPTQ); a Hessian that is not finite says where such values come from.
TEST(IntGrid, NonFiniteWeightsAreRefusedNamingTheElement) {
  auto w = at::randn({8, 64}, gen(3), at::kFloat);
  w[2][17] = NAN;
  EXPECT_NE(test::error_of([&] { rtn_quantize(w, {4, 32, true}); })
                .find("round-to-nearest: the weight holds a non-finite value (nan) at row 2, column 17"),
            std::string::npos);
  GptqOptions o;
  o.grid = {4, 32, false};
  EXPECT_NE(test::error_of([&] { gptq_quantize(w, hessian_of(64, 256, 4), o); })
                .find("GPTQ: the weight holds a non-finite value (nan) at row 2, column 17"),
            std::string::npos);
  w[2][17] = 0.5;
  w[7][0] = -INFINITY;
  EXPECT_NE(test::error_of([&] { rtn_quantize(w, {4, -1, true}); }).find("(-inf) at row 7, column 0"), std::string::npos);
  w[7][0] = 0.5;
  auto h = hessian_of(64, 256, 4);
  h[3][3] = NAN;
  EXPECT_NE(test::error_of([&] { gptq_quantize(w, h, o); }).find("calibration inputs of this linear hold a NaN or inf"),
            std::string::npos);
}

TEST(GptqFormat, TheLayoutSaysWhichShapesItHolds) {
  EXPECT_EQ(gptq_layout_problem({4, 32, true}, 128, 64), "");
  EXPECT_EQ(gptq_layout_problem({8, -1, true}, 172, 64), "");  // 4 codes per word
  EXPECT_EQ(gptq_layout_problem({4, 32, true}, 172, 64),
            "172 outputs are not a multiple of 8 (4-bit zero points per int32 word)");
  EXPECT_EQ(gptq_layout_problem({2, 32, true}, 64, 40),
            "40 inputs are not a multiple of 16 (2-bit codes per int32 word); 40 inputs are not a multiple of the "
            "group size 32");
  // Whatever the layout names holdable, packing holds.
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{{128, 64}, {172, 64}, {64, 172}}) {
    const IntGridOptions grid{4, -1, true};
    const auto w = at::randn({out, in}, gen(5), at::kFloat);
    if (gptq_layout_problem(grid, out, in).empty()) EXPECT_NO_THROW(pack_gptq(rtn_quantize(w, grid)));
    else EXPECT_THROW(pack_gptq(rtn_quantize(w, grid)), Error);
  }
}

// Asymmetric grids anywhere in the checkpoint (the base's or a dynamic rule's) are written as gptq_v2, which gptqmodel
// loads from any writer; symmetric ones as gptq, what the hub holds.
TEST(GptqFormat, TheDefaultZeroPointConventionFollowsTheGrids) {
  GptqConfig c;
  c.grid = {4, 128, true};
  EXPECT_EQ(default_checkpoint_format(c), GptqCheckpointFormat::V1);
  c.add_skip("model.layers.0.mlp.up_proj");
  c.add_override("model.layers.0.mlp.down_proj", {8, 128, true});
  EXPECT_EQ(default_checkpoint_format(c), GptqCheckpointFormat::V1);
  c.add_override("model.layers.1.mlp.down_proj", {8, 128, false});
  EXPECT_EQ(default_checkpoint_format(c), GptqCheckpointFormat::V2);
  GptqConfig a;
  a.grid = {4, 128, false};
  EXPECT_EQ(default_checkpoint_format(a), GptqCheckpointFormat::V2);
}

}  // namespace
}  // namespace qtune::quant
