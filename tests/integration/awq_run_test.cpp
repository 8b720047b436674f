// qtune quantize --method awq end to end on the tiny model: AWQ lowers the calibration output error below
// round-to-nearest's, the checkpoint loads back as AWQ linears closer to the dense model than round-to-nearest,
// QLoRA trains on it and exports a PEFT adapter, and bad input is a clear error that leaves nothing behind.
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/calib/importance.h"
#include "qtune/calib/layerwise_awq.h"
#include "qtune/calib/layerwise_gptq.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::calib {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

std::vector<std::vector<int64_t>> calibration(const train::TinyRun& t, int64_t n = 16) {
  const auto tok = data::Tokenizer::load(t.model);
  return calibration_sequences(t.dir + "/corpus.txt", tok, 64, n);
}

double relative_error(const at::Tensor& a, const at::Tensor& ref) {
  return (a - ref).norm().item<double>() / ref.norm().item<double>();
}

TEST(AwqRun, LowersTheOutputErrorBelowRoundToNearestAndLoadsBackAsAwqLinears) {
  train::TinyRun t;
  AwqRunOptions o;
  o.awq.grid = {4, 32, false};
  o.dtype = at::kFloat;
  const auto out = t.dir + "/awq";
  const auto r = quantize_to_awq(t.model, calibration(t), o, out);
  ASSERT_EQ(r.linears.size(), 14u);
  double sum = 0, rtn_sum = 0;
  for (const auto& l : r.linears) {
    EXPECT_GT(l.rtn_error, 0) << l.name;
    sum += l.error, rtn_sum += l.rtn_error;
    // The tiny model has GQA: o_proj keeps its scale (none), every other linear is scaled; q/k are not clipped.
    EXPECT_EQ(l.ratio < 0, l.name.find("o_proj") != std::string::npos) << l.name;
    EXPECT_EQ(l.clipped, l.name.find("q_proj") == std::string::npos && l.name.find("k_proj") == std::string::npos);
  }
  EXPECT_LT(sum, 0.9 * rtn_sum);
  EXPECT_EQ(r.calibration_tokens, 16 * 64);
  EXPECT_NEAR(r.bits_per_weight, 4 + (16.0 + 4) / 32, 1e-9);  // codes, fp16 scales and 4-bit zeros per group of 32
  const auto config = io::read_json_file(out + "/config.json");
  EXPECT_EQ(config["quantization_config"]["quant_method"], "awq");
  EXPECT_EQ(config["quantization_config"]["version"], "gemm");
  EXPECT_EQ(config["quantization_config"]["zero_point"], true);
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  auto dense = nn::load_causal_lm(t.model, kFp32);
  auto awq = nn::load_causal_lm(out, kFp32);
  int64_t awq_linears = 0;
  for (const auto& item : awq->named_modules()) {
    auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
    awq_linears += q && q->weight().format() == "awq-int4-g32";
  }
  EXPECT_EQ(awq_linears, 14);
  // The scales went into the norms: the checkpoint's norm weights are no longer the model's.
  const auto norms = io::SafetensorsFile::open(out + "/model.safetensors");
  const auto source = io::SafetensorsFile::open(t.model + "/model.safetensors");
  EXPECT_FALSE(at::equal(norms->tensor("model.layers.0.input_layernorm.weight"),
                         source->tensor("model.layers.0.input_layernorm.weight")));

  const auto ref = train::probe_logits(*dense);
  GptqRunOptions rtn;
  rtn.rtn = true;
  rtn.gptq.grid = {4, 32, false};
  rtn.dtype = at::kFloat;
  quantize_to_gptq(t.model, {}, rtn, t.dir + "/rtn");
  const double awq_err = relative_error(train::probe_logits(*awq), ref);
  EXPECT_LT(awq_err, relative_error(train::probe_logits(*nn::load_causal_lm(t.dir + "/rtn", kFp32)), ref));
}

TEST(AwqRun, QloraTrainsOnAnAwqBaseAndExportsAPeftAdapter) {
  train::TinyRun t;
  AwqRunOptions o;
  o.awq.grid = {4, 32, false};
  quantize_to_awq(t.model, calibration(t, 8), o, t.dir + "/awq");
  auto recipe = t.recipe({"model.path=" + t.dir + "/awq", "train.max_steps=12"});
  const auto s = train::run_training(recipe, train::quiet());
  EXPECT_LT(s.last_loss, s.first_loss);
  EXPECT_TRUE(fs::exists(s.adapter_dir + "/adapter_model.safetensors"));
}

TEST(AwqRun, BadInputIsAClearErrorAndLeavesNothingBehind) {
  train::TinyRun t;
  AwqRunOptions o;
  o.awq.grid = {4, 32, false};
  const auto out = t.dir + "/awq";
  EXPECT_NE(test::error_of([&] { quantize_to_awq(t.model, {}, o, out); }).find("needs calibration sequences"),
            std::string::npos);
  o.awq.grid.group_size = 48;  // 64 inputs are not a multiple of 48
  EXPECT_NE(test::error_of([&] { quantize_to_awq(t.model, calibration(t, 2), o, out); }).find("multiple of the group size 48"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  o.awq.grid = {8, 32, false};
  EXPECT_NE(test::error_of([&] { quantize_to_awq(t.model, calibration(t, 2), o, out); }).find("4-bit codes"),
            std::string::npos);
  const auto cli = test::run_qtune("quantize " + t.model + " --method awq --group-size -1 --calib " + t.dir +
                                   "/corpus.txt --calib-samples 2 --calib-seq-len 64 --out " + out);
  EXPECT_NE(cli.code, 0);
  EXPECT_NE(cli.err.find("--group-size -1: --method awq needs groups"), std::string::npos) << cli.err;

  // A corrupt checkpoint: a qzeros of the wrong shape is named with what was expected.
  o.awq.grid = {4, 32, false};
  quantize_to_awq(t.model, calibration(t, 2), o, out);
  auto tensors = io::SafetensorsFile::open(out + "/model.safetensors");
  io::NamedTensors all;
  for (const auto& info : tensors->tensors()) {
    auto x = tensors->tensor(info.name).clone();
    if (info.name == "model.layers.1.mlp.down_proj.qzeros") x = x.slice(0, 0, 1).contiguous();
    all.emplace_back(info.name, x);
  }
  tensors.reset();
  io::write_safetensors(out + "/model.safetensors", all, {{"format", "pt"}});
  const auto bad = test::error_of([&] { nn::load_causal_lm(out, kFp32); });
  EXPECT_NE(bad.find("model.layers.1.mlp.down_proj.qzeros: is Int [1, 8], expected Int [4, 8]"), std::string::npos)
      << bad;
}

}  // namespace
}  // namespace qtune::calib
