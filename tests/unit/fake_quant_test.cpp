// Fake quantization (quant/fake_quant.h, autograd/fake_quant.h, kernels/fake_quant.h) against plain references: the
// exporters' own quantize -> dequantize for NF4/FP4 and the GGUF types, a scalar loop for the affine kernel (and the
// CUDA kernel against the CPU one), and the straight-through gradients of a QAT LoRA layer and a QAT dense layer against
// the same arithmetic written with plain autograd ops. (torchao itself: oracle_torchao_fake_quant_test.cpp.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "qtune/autograd/fake_quant.h"
#include "qtune/kernels/dequant.h"
#include "qtune/kernels/dequant_ggml.h"
#include "qtune/kernels/fake_quant.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/qat/fake_quant_linear.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/quant/gguf_quantize.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/nf4.h"
#include "test_util.h"

namespace qtune::quant {
namespace {

using test::bitwise_equal;
using test::error_of;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

at::Tensor random_weight(int64_t rows, int64_t cols, uint64_t seed, double std = 0.05) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({rows, cols}, gen, at::kFloat) * std;
}

TEST(FakeQuant, Nf4AndFp4AreTheMergedExportsQuantizeThenDequantize) {
  const auto w = random_weight(24, 96, 1);
  for (const auto* format : {"nf4", "fp4"})
    for (int64_t block : {64, 128})
      for (bool dq : {true, false}) {
        SCOPED_TRACE(std::string(format) + " block " + std::to_string(block) + (dq ? " dq" : ""));
        auto spec = parse_fake_quant(format, block, true, "test");
        spec.double_quant = dq;
        Quantize4Options o;
        o.format = spec.kind == FakeQuantKind::NF4 ? Format4::NF4 : Format4::FP4;
        o.blocksize = block;
        o.double_quant = dq;
        const auto expected = kernels::dequantize_4bit(quantize_4bit(w, o), at::kFloat).view(w.sizes());
        const auto q = fake_quantize_weight(w, spec);
        EXPECT_TRUE(bitwise_equal(q.values, expected));
        EXPECT_FALSE(q.inside.defined()) << "nothing clips beyond a block's absmax";
        EXPECT_FALSE(at::equal(q.values, w));
      }
}

TEST(FakeQuant, GgufTypesAreTheGgufExportsQuantizeThenDequantize) {
  const auto w = random_weight(6, 512, 2);
  for (const auto* format : {"q8_0", "q4_0", "q4_1", "q5_0", "q4_k", "q6_k"}) {
    SCOPED_TRACE(format);
    const auto spec = parse_fake_quant(format, 0, true, "test");
    const auto expected =
        kernels::dequantize_ggml_rows(spec.ggml, quantize_ggml(spec.ggml, w), w.size(1), at::kFloat);
    EXPECT_TRUE(bitwise_equal(fake_quantize_weight(w, spec).values, expected));
  }
  EXPECT_TRUE(contains(error_of([&] { fake_quantize_weight(random_weight(4, 96, 3), parse_fake_quant("q4_k", 0, true, "k")); }),
                       "blocks of 256"));
}

TEST(FakeQuant, GgufExportFallbacksF16AndF32AreTheirRounding) {
  const auto w = random_weight(5, 43, 15);  // a row no block type divides
  EXPECT_TRUE(bitwise_equal(fake_quantize_weight(w, ggml_fake_quant(GgmlType::F16)).values,
                            w.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(bitwise_equal(fake_quantize_weight(w, ggml_fake_quant(GgmlType::F32)).values, w));
  EXPECT_EQ(ggml_fake_quant(GgmlType::F16).name(), "f16");
  EXPECT_EQ(ggml_fake_quant(GgmlType::Q4_K).group_for(512, "x"), 256);
  EXPECT_TRUE(contains(error_of([] { ggml_fake_quant(GgmlType::Q8_1); }), "Q8_1"));
}

// The affine kernel, written out element by element with the same fp32 roundings.
std::pair<at::Tensor, at::Tensor> affine_reference(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero,
                                                   int64_t group, float qmin, float qmax) {
  auto out = at::empty_like(x);
  auto inside = at::empty(x.sizes(), x.options().dtype(at::kBool));
  const auto inv = scale.reciprocal();
  for (int64_t r = 0; r < x.size(0); ++r)
    for (int64_t c = 0; c < x.size(1); ++c) {
      const float s = scale[r][c / group].item<float>(), i = inv[r][c / group].item<float>();
      const float z = zero[r][c / group].item<float>();
      const float q = std::nearbyint(x[r][c].item<float>() * i) + z;
      inside[r][c] = q >= qmin && q <= qmax;
      out[r][c] = (std::min(std::max(q, qmin), qmax) - z) * s;
    }
  return {out, inside};
}

TEST(FakeQuant, AffineKernelEqualsTheScalarReferenceAndRoundsHalfToEven) {
  auto x = random_weight(5, 64, 4, 1.0);
  x[0].copy_(at::arange(64, at::kFloat).sub(32).mul(0.5));  // exact halves of the scale 1: ties
  auto scale = at::rand({5, 2}, at::kFloat).add(0.05);
  scale[0].fill_(1.0f);
  const auto zero = at::randint(0, 4, {5, 2}, at::kFloat);
  const auto [out, inside] = kernels::fake_quantize_affine(x, scale, zero, 32, -8, 7);
  const auto [ref_out, ref_inside] = affine_reference(x, scale, zero, 32, -8, 7);
  EXPECT_TRUE(bitwise_equal(out, ref_out));
  EXPECT_TRUE(at::equal(inside, ref_inside));
  EXPECT_EQ(out[0][32 + 5].item<float>(), 2.0f) << "2.5 rounds to 2";
  EXPECT_EQ(out[0][32 + 7].item<float>(), 4.0f) << "3.5 rounds to 4";
  EXPECT_TRUE(inside.logical_not().any().item<bool>());
}

TEST(FakeQuant, CudaKernelEqualsTheCpuOne) {
  if (!torch::cuda::is_available() || !kernels::cuda_kernels_built()) GTEST_SKIP() << "no CUDA device";
  const auto w = random_weight(33, 256, 5);
  for (bool symmetric : {true, false}) {
    const auto spec = parse_fake_quant("int4", 32, symmetric, "test");
    const auto cpu = fake_quantize_weight(w, spec);
    const auto gpu = fake_quantize_weight(w.cuda(), spec);
    EXPECT_TRUE(bitwise_equal(gpu.values.cpu(), cpu.values));
    EXPECT_TRUE(at::equal(gpu.inside.cpu(), cpu.inside));
  }
  const auto x = random_weight(7, 96, 6, 2.0);
  EXPECT_TRUE(bitwise_equal(fake_quantize_tokens_int8(x.cuda()).values.cpu(), fake_quantize_tokens_int8(x).values));
}

TEST(FakeQuant, ParsingNamesTheKeyAndWhatWasExpected) {
  EXPECT_EQ(parse_fake_quant("nf4", 0, true, "k").group_size, 64);
  EXPECT_EQ(parse_fake_quant("int4", 0, true, "k").group_size, 32);
  EXPECT_EQ(parse_fake_quant("int8", 0, true, "k").group_size, -1);
  EXPECT_EQ(parse_fake_quant("Q4_K", 0, true, "k").name(), "q4_k");
  EXPECT_EQ(parse_fake_quant("int4", 128, false, "k").name(), "int4 g128 asymmetric");
  EXPECT_NEAR(parse_fake_quant("nf4", 64, true, "k").bits_per_weight(), 4.127, 1e-3);
  EXPECT_DOUBLE_EQ(parse_fake_quant("q8_0", 0, true, "k").bits_per_weight(), 8.5);
  const auto unknown = error_of([] { parse_fake_quant("int9", 0, true, "r.yaml: quant.qat"); });
  EXPECT_TRUE(contains(unknown, "r.yaml: quant.qat") && contains(unknown, "int9") && contains(unknown, "q4_k")) << unknown;
  EXPECT_TRUE(contains(error_of([] { parse_fake_quant("nf4", 48, true, "k"); }), "power of two"));
  EXPECT_TRUE(contains(error_of([] { parse_fake_quant("q4_0", 64, true, "k"); }), "fixed block of 32"));
  const auto group = error_of([] { parse_fake_quant("int4", 48, true, "k").group_for(100, "layers.0.q_proj"); });
  EXPECT_TRUE(contains(group, "layers.0.q_proj") && contains(group, "48") && contains(group, "100")) << group;
}

// What `export --merged --quantize intN` writes: the integer codes, fp16 scales and zero points whose dequantization is
// the fake-quantized weight bit for bit, through the GPTQ packing and back, on GPTQ's unsigned grid.
TEST(FakeQuant, IntCodesDeployTheFakeQuantizedWeightThroughTheGptqLayout) {
  auto w = random_weight(32, 192, 11);
  w[0].zero_();
  w[1].abs_();
  w[2][5] = 3.0f;  // an outlier in its group
  w[3].mul_(1e-4);
  for (const auto& [format, group, symmetric] : std::vector<std::tuple<const char*, int64_t, bool>>{
           {"int4", 32, true}, {"int4", 64, false}, {"int2", 32, false}, {"int8", -1, true}, {"int8", 96, false}}) {
    const auto spec = parse_fake_quant(format, group, symmetric, "test");
    SCOPED_TRACE(spec.name());
    ASSERT_TRUE(spec.fp16_scales);
    const auto q = int_codes(w, spec);
    const auto fake = fake_quantize_weight(w, spec).values;
    EXPECT_TRUE(bitwise_equal(q.dequantize(), fake));
    EXPECT_TRUE(bitwise_equal(q.scales.to(at::kHalf).to(at::kFloat), q.scales)) << "scales are not fp16 values";
    EXPECT_EQ(q.codes.max().item<int64_t>() <= q.grid.max_code(), true);
    if (symmetric) {
      EXPECT_TRUE((q.zeros == (1 << (spec.bits - 1))).all().item<bool>());
    }
    const auto back = unpack_gptq(pack_gptq(q), q.grid);
    EXPECT_TRUE(bitwise_equal(back.dequantize(), fake));
    EXPECT_TRUE(at::equal(back.codes, q.codes));
  }
  // fp32 scales (torchao's default precision) move values: what the fp16 default deploys exactly.
  auto fp32 = parse_fake_quant("int4", 32, true, "test");
  fp32.fp16_scales = false;
  EXPECT_FALSE(bitwise_equal(fake_quantize_weight(w, fp32).values,
                             fake_quantize_weight(w, parse_fake_quant("int4", 32, true, "test")).values));
  EXPECT_EQ(fp32.name(), "int4 g32 symmetric (fp32 scales)");
  EXPECT_TRUE(contains(error_of([&] { int_codes(w, parse_fake_quant("int3", 32, true, "test")); }), "bits must be 2, 4 or 8"));
  EXPECT_TRUE(contains(error_of([&] { int_codes(w, parse_fake_quant("nf4", 64, true, "test")); }), "not an integer format"));
}

// The LoRA layer a QAT run trains: forward x · fq(W + s·B·A)ᵀ, gradients to A and B through the estimator.
TEST(FakeQuant, LoraLayerTrainsTheDeployedMergedWeight) {
  const auto w = random_weight(32, 64, 7);
  auto base = std::make_shared<nn::DenseLinearImpl>(nn::LinearSpec{"layers.0.q_proj", 64, 32, false}, w, at::Tensor());
  qat::QatOptions o;
  o.weights = parse_fake_quant("int4", 32, true, "test");
  lora::LoraLinearImpl layer(base, lora::LoraTarget{4, 8, 2.0}, 0.0, at::make_generator<at::CPUGeneratorImpl>(1), o);
  {
    torch::NoGradGuard g;
    const_cast<at::Tensor&>(layer.lora_B()).copy_(random_weight(32, 4, 8, 0.1));
  }
  const auto x = random_weight(3, 64, 9, 1.0).view({1, 3, 64});
  const auto gy = random_weight(3, 32, 10, 1.0).view({1, 3, 32});
  layer.forward(x).backward(gy);
  const auto grad_a = layer.lora_A().grad().clone(), grad_b = layer.lora_B().grad().clone();

  // The same with plain ops: the estimator as M + (fq(M) - M).detach() where the value is inside the range, a
  // constant where it is clipped.
  const auto a = layer.lora_A().detach().clone().set_requires_grad(true);
  const auto b = layer.lora_B().detach().clone().set_requires_grad(true);
  const auto m = w + at::mm(b, a) * 2.0;
  const auto q = fake_quantize_weight(m.detach(), *o.weights);
  const auto ste = at::where(q.inside, m + (q.values - m).detach(), q.values);
  const auto y = at::matmul(x, ste.t());
  EXPECT_TRUE(bitwise_equal(layer.forward(x).detach(), at::matmul(x, q.values.t())));
  y.backward(gy);
  EXPECT_TRUE(at::allclose(grad_a, a.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(grad_b, b.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(q.inside.logical_not().any().item<bool>()) << "nothing clipped: the zero side went untested";

  // Off (before quant.qat_start), the layer is plain LoRA again.
  layer.set_fake_quant(false);
  torch::NoGradGuard g;
  const auto plain = at::linear(x, w) + at::linear(at::linear(x, layer.lora_A()), layer.lora_B()) * 2.0;
  EXPECT_TRUE(at::allclose(layer.forward(x), plain, 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(layer.forward(x), y.detach(), 1e-3, 1e-3));
}

TEST(FakeQuant, LoraLayerRefusesDropoutAndGroupsThatDoNotFit) {
  auto base = std::make_shared<nn::DenseLinearImpl>(nn::LinearSpec{"layers.0.v_proj", 96, 32, false},
                                                    random_weight(32, 96, 11), at::Tensor());
  qat::QatOptions o;
  o.weights = parse_fake_quant("nf4", 64, true, "test");
  const auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_TRUE(contains(error_of([&] { lora::LoraLinearImpl(base, {4, 8, 2.0}, 0.1, gen, o); }), "dropout"));
  o.weights = parse_fake_quant("int4", 64, true, "test");
  const auto msg = error_of([&] { lora::LoraLinearImpl(base, {4, 8, 2.0}, 0.0, gen, o); });
  EXPECT_TRUE(contains(msg, "layers.0.v_proj") && contains(msg, "96")) << msg;
}

TEST(FakeQuant, DenseLayerOfFullFineTuningTrainsThroughTheEstimator) {
  qat::QatOptions o;
  o.weights = parse_fake_quant("int4", 16, true, "test");  // symmetric: +absmax rounds to 8 and clips
  o.int8_tokens = true;
  qat::FakeQuantLinearImpl layer(nn::LinearSpec{"layers.0.up_proj", 32, 8, false}, random_weight(8, 32, 12),
                                 at::Tensor(), o);
  ASSERT_EQ(layer.named_parameters().size(), 1u);
  EXPECT_EQ(layer.named_parameters().begin()->key(), "weight") << "the dense linear's name: checkpoints do not change";
  auto w = layer.named_parameters().begin()->value();
  w.set_requires_grad(true);  // as train.mode full does with every parameter
  const auto x = random_weight(4, 32, 13, 1.0);
  const auto gy = random_weight(4, 8, 14, 1.0);
  layer.forward(x).backward(gy);
  const auto qw = fake_quantize_weight(w.detach(), *o.weights);
  const auto qx = fake_quantize_tokens_int8(x);
  EXPECT_TRUE(bitwise_equal(layer.forward(x).detach(), at::linear(qx.values, qw.values)));
  const auto expected = at::where(qw.inside, at::mm(gy.t(), qx.values), at::zeros_like(w));
  EXPECT_TRUE(at::allclose(w.grad(), expected, 1e-6, 1e-7));
  EXPECT_TRUE(qw.inside.logical_not().any().item<bool>());
}

}  // namespace
}  // namespace qtune::quant
