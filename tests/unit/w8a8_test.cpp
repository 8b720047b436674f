// W8A8 (quant/w8a8.h, kernels/w8a8_matmul.h, autograd/w8a8_matmul.h) against a plain reference kept here: the weight
// and per-token codes as loops compute them, the forward against the fp32 computation on the fake-quantized
// (quantized, then dequantized) inputs and weights, the integer products against an int64 matmul of the same codes,
// and the backward as the straight-through estimator. Agreement with compressed-tensors and transformers is checked in
// oracle_compressed_tensors_test.cpp.
#include "qtune/kernels/w8a8_matmul.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <vector>

#include "qtune/autograd/w8a8_matmul.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/w8a8.h"
#include "test_util.h"

namespace qtune::quant {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, double std = 1.0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::kFloat) * std;
}

// Activations as real ones look: a few input channels far larger than the rest, a zero token, and one token whose
// values sit exactly on rounding ties (absmax 127 makes 127 / absmax exactly 1: 2.5 rounds to 2, 3.5 to 4).
at::Tensor activations(int64_t tokens, int64_t in, uint64_t seed) {
  auto x = randn({tokens, in}, seed);
  x.narrow(1, 0, std::min<int64_t>(3, in)).mul_(20);
  if (tokens > 1) x[1].zero_();
  if (tokens > 2 && in >= 5) {
    x[2].zero_();
    x[2][0] = 127, x[2][1] = 2.5, x[2][2] = 3.5, x[2][3] = -2.5, x[2][4] = -0.5;
  }
  return x;
}

// The reference of the per-token codes: vLLM's loop (scale absmax / 127; code nearbyint(x * (127 / absmax))).
struct RefTokens {
  std::vector<int8_t> codes;
  std::vector<float> scale;
};
RefTokens reference_tokens(const at::Tensor& x) {
  const auto c = x.contiguous();
  const int64_t t = c.size(0), in = c.size(1);
  const float* p = c.data_ptr<float>();
  RefTokens r{std::vector<int8_t>(t * in), std::vector<float>(t)};
  for (int64_t i = 0; i < t; ++i) {
    float absmax = 0;
    for (int64_t j = 0; j < in; ++j) absmax = std::max(absmax, std::fabs(p[i * in + j]));
    r.scale[i] = absmax / 127.0f;
    const float inv = absmax > 0 ? 127.0f / absmax : 0.0f;
    for (int64_t j = 0; j < in; ++j)
      r.codes[i * in + j] = static_cast<int8_t>(std::clamp(std::nearbyint(p[i * in + j] * inv), -127.0f, 127.0f));
  }
  return r;
}

TEST(W8A8, WeightCodesAreRoundToNearestPerOutputChannel) {
  auto w = randn({37, 53}, 1, 0.05);
  w[4].zero_();
  w[5][7] = 3.0f;  // an outlier takes its whole row's range
  const auto s = quantize_w8a8_weight(w);
  ASSERT_EQ(s.codes.scalar_type(), at::kChar);
  ASSERT_EQ(s.scale.sizes(), at::IntArrayRef({37}));
  const float* pw = w.data_ptr<float>();
  for (int64_t r = 0; r < 37; ++r) {
    float absmax = 0;
    for (int64_t c = 0; c < 53; ++c) absmax = std::max(absmax, std::fabs(pw[r * 53 + c]));
    const float scale = absmax / 127.0f;
    ASSERT_EQ(s.scale[r].item<float>(), scale) << "row " << r;
    for (int64_t c = 0; c < 53; ++c) {
      const float want = scale > 0 ? std::nearbyint(pw[r * 53 + c] / scale) : 0.0f;
      ASSERT_EQ(s.codes[r][c].item<int8_t>(), static_cast<int8_t>(want)) << r << ", " << c;
    }
  }
  EXPECT_EQ(s.codes[5][7].item<int8_t>(), 127);
  EXPECT_TRUE(s.codes[4].eq(0).all().item<bool>());
  EXPECT_LE(s.codes.abs().max().item<int>(), 127);
  // bf16 weights quantize from their exact fp32 values.
  const auto b = quantize_w8a8_weight(w.to(at::kBFloat16));
  EXPECT_TRUE(test::bitwise_equal(b.codes, quantize_w8a8_weight(w.to(at::kBFloat16).to(at::kFloat)).codes));

  auto bad = w.clone();
  bad[9][2] = std::nanf("");
  EXPECT_NE(test::error_of([&] { quantize_w8a8_weight(bad); }).find("weight row 9 holds a non-finite value"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { quantize_w8a8_weight(w.to(at::kInt)); }).find("fp32, bf16 or fp16"), std::string::npos);
}

TEST(W8A8, TokenCodesAreVllmsDynamicPerTokenQuantization) {
  const auto x = activations(9, 70, 2);
  const auto t = kernels::quantize_tokens_int8(x);
  const auto ref = reference_tokens(x);
  EXPECT_TRUE(test::bitwise_equal(t.codes, at::from_blob(const_cast<int8_t*>(ref.codes.data()), {9, 70}, at::kChar)));
  EXPECT_TRUE(test::bitwise_equal(t.scale, at::from_blob(const_cast<float*>(ref.scale.data()), {9}, at::kFloat)));
  // The ties round half to even, the zero token to codes 0 with scale 0.
  EXPECT_EQ(t.codes[2][1].item<int8_t>(), 2);
  EXPECT_EQ(t.codes[2][2].item<int8_t>(), 4);
  EXPECT_EQ(t.codes[2][3].item<int8_t>(), -2);
  EXPECT_EQ(t.codes[2][4].item<int8_t>(), 0);
  EXPECT_EQ(t.scale[1].item<float>(), 0.0f);
  EXPECT_TRUE(t.codes[1].eq(0).all().item<bool>());
  // bf16 and fp16 inputs quantize from their exact fp32 values.
  for (auto dtype : {at::kBFloat16, at::kHalf})
    EXPECT_TRUE(test::bitwise_equal(kernels::quantize_tokens_int8(x.to(dtype)).codes,
                                    kernels::quantize_tokens_int8(x.to(dtype).to(at::kFloat)).codes));
}

// int32 products equal an int64 matmul of the same codes: at the extremes of the range (sums of 2^26 for k = 4096 of
// -128 codes, past fp32's exact integers), at odd sizes, and with a single row (what a decode step multiplies).
TEST(W8A8, IntegerAccumulationIsExact) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 3, 5}, {17, 100, 30}, {64, 4096, 8}, {5, 64, 128}}) {
    SCOPED_TRACE(::testing::Message() << m << "x" << k << "x" << n);
    auto a = at::randint(-128, 128, {m, k}, gen, at::kChar);
    auto b = at::randint(-128, 128, {n, k}, gen, at::kChar);
    if (k == 4096) a.fill_(-128), b.narrow(0, 0, 4).fill_(-128), b.narrow(0, 4, 4).fill_(127);
    const auto got = kernels::int8_matmul(a, b);
    ASSERT_EQ(got.scalar_type(), at::kInt);
    EXPECT_TRUE(at::equal(got.to(at::kLong), at::matmul(a.to(at::kLong), b.to(at::kLong).t())));
  }
  EXPECT_TRUE(at::equal(kernels::int8_matmul(at::zeros({2, 0}, at::kChar), at::zeros({3, 0}, at::kChar)),
                        at::zeros({2, 3}, at::kInt)));
}

// The forward equals the same computation in floating point on the fake-quantized operands: exactly (to the two fp32
// roundings of the rescale) against a double-precision sum, and to fp32 accumulation error against a plain fp32 matmul.
TEST(W8A8, ForwardEqualsTheFp32ReferenceOfFakeQuantizedOperands) {
  const int64_t in = 96, out = 80;
  const auto w = quantize_w8a8_weight(randn({out, in}, 4, 0.05));
  const auto x = activations(37, in, 5);
  const auto y = kernels::w8a8_matmul(x, w);
  ASSERT_EQ(y.sizes(), at::IntArrayRef({37, out}));
  ASSERT_EQ(y.scalar_type(), at::kFloat);

  const auto ref = reference_tokens(x);
  const auto xq = at::from_blob(const_cast<int8_t*>(ref.codes.data()), {37, in}, at::kChar).to(at::kFloat) *
                  at::from_blob(const_cast<float*>(ref.scale.data()), {37, 1}, at::kFloat);
  const auto wq = w.codes.to(at::kFloat) * w.scale.unsqueeze(1);
  const auto ref32 = at::matmul(xq, wq.t());
  // In double the fake-quantized operands are exact (8-bit codes times fp32 scales), and so is their sum up to 2^-53.
  const auto xq64 = at::from_blob(const_cast<int8_t*>(ref.codes.data()), {37, in}, at::kChar).to(at::kDouble) *
                    at::from_blob(const_cast<float*>(ref.scale.data()), {37, 1}, at::kFloat).to(at::kDouble);
  const auto wq64 = w.codes.to(at::kDouble) * w.scale.to(at::kDouble).unsqueeze(1);
  const auto ref64 = at::matmul(xq64, wq64.t());
  // (sum · token scale) · channel scale: the int32 sum is exact and below 2^24, so two fp32 roundings remain.
  const auto err = (y.to(at::kDouble) - ref64).abs();
  const auto allowed = ref64.abs() * (2.5 * std::ldexp(1.0, -24)) + at::matmul(xq64.abs(), wq64.abs().t()) * 1e-15;
  EXPECT_TRUE(err.le(allowed).all().item<bool>()) << "max relative error " << (err / ref64.abs().clamp_min(1e-30)).max().item<double>();
  // fp32 accumulation of `in` products: |error| <= in · eps · sum |products|.
  const auto bound = at::matmul(xq.abs(), wq.abs().t()) * (in * std::ldexp(1.0, -24));
  EXPECT_TRUE((y - ref32).abs().le(bound + 1e-30).all().item<bool>())
      << "max |y - ref32| " << (y - ref32).abs().max().item<float>();
  // The zero token gives zeros; a batch of sequences is the same as its rows.
  EXPECT_TRUE(y[1].eq(0).all().item<bool>());
  EXPECT_TRUE(test::bitwise_equal(kernels::w8a8_matmul(x.view({1, 37, in}), w), y.view({1, 37, out})));
  // bf16 inputs give bf16 outputs: the fp32 result rounded once.
  const auto xb = x.to(at::kBFloat16);
  EXPECT_TRUE(test::bitwise_equal(kernels::w8a8_matmul(xb, w), kernels::w8a8_matmul(xb.to(at::kFloat), w).to(at::kBFloat16)));
  EXPECT_NE(test::error_of([&] { kernels::w8a8_matmul(randn({2, in + 1}, 6), w); })
                .find("input has 97 features, the weight expects 96"),
            std::string::npos);
}

// Backward is the straight-through estimator: the gradient passes the activation rounding as if it were the identity,
// grad_x = grad_y · dequantize(W), and the frozen weight gets none. The layer's forward is the W8A8 one.
TEST(W8A8, BackwardPassesThroughTheActivationRounding) {
  const int64_t in = 48, out = 24;
  auto state = quantize_w8a8_weight(randn({out, in}, 7, 0.05));
  c10::intrusive_ptr<QuantizedWeight> weight = c10::make_intrusive<W8A8Weight>(state);
  nn::QuantizedLinearImpl linear({"proj", in, out, false}, weight, at::Tensor());
  auto x = activations(6, in, 8).view({2, 3, in}).requires_grad_(true);
  auto y = linear.forward(x);
  EXPECT_TRUE(test::bitwise_equal(y.detach(), kernels::w8a8_matmul(x.detach(), state)));
  const auto grad_y = randn({2, 3, out}, 9);
  y.backward(grad_y);
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(test::bitwise_equal(x.grad(), at::matmul(grad_y, state.dequantize(at::kFloat))));
  EXPECT_EQ(weight->format(), "w8a8");
  EXPECT_EQ(weight->storage_bytes(), out * in + out * 4);
}

TEST(W8A8, BadStatesNameWhatIsWrong) {
  W8A8State s{at::zeros({4, 8}, at::kChar), at::ones({3}, at::kFloat)};
  EXPECT_NE(test::error_of([&] { W8A8Weight w(s); }).find("one value per output channel (4)"), std::string::npos);
  s.scale = at::ones({4}, at::kDouble);
  EXPECT_NE(test::error_of([&] { W8A8Weight w(s); }).find("scales must be fp32"), std::string::npos);
  s = {at::zeros({4, 8}, at::kByte), at::ones({4}, at::kFloat)};
  EXPECT_NE(test::error_of([&] { W8A8Weight w(s); }).find("codes must be int8"), std::string::npos);
}

// On a GPU: the same values as on the CPU, bit for bit, including the shapes cuBLASLt's int8 GEMM refuses (16 rows or
// fewer, widths not a multiple of 8), which are padded.
TEST(W8A8, CudaEqualsCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  const at::Device cuda(at::kCUDA, 0);
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 64, 48}, {16, 60, 50}, {17, 64, 48}, {300, 576, 1536}}) {
    SCOPED_TRACE(::testing::Message() << m << "x" << k << "x" << n);
    const auto w = quantize_w8a8_weight(randn({n, k}, 10, 0.05));
    W8A8State wc{w.codes.to(cuda), w.scale.to(cuda)};
    const auto x = activations(m, k, 11);
    EXPECT_TRUE(at::equal(kernels::int8_matmul(kernels::quantize_tokens_int8(x).codes.to(cuda), wc.codes).cpu(),
                          kernels::int8_matmul(kernels::quantize_tokens_int8(x).codes, w.codes)));
    EXPECT_TRUE(test::bitwise_equal(kernels::w8a8_matmul(x.to(cuda), wc).cpu(), kernels::w8a8_matmul(x, w)));
    EXPECT_TRUE(test::bitwise_equal(kernels::w8a8_matmul(x.to(cuda).to(at::kBFloat16), wc).cpu(),
                                    kernels::w8a8_matmul(x.to(at::kBFloat16), w)));
  }
}

}  // namespace
}  // namespace qtune::quant
