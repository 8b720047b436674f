// qtune quantize --method smoothquant end to end on the tiny model: with --smooth-only a dense Hugging Face directory
// that computes the source's function, with smoothquant.json saying which α each layer took; without it the
// compressed-tensors W8A8 checkpoint of the smoothed model; --method smoothquant+gptq: the same
// checkpoint with GPTQ's int8 codes; and bad input (an α outside [0, 1], a
// calibration text too short, a linear no norm precedes) is a clear error that leaves nothing behind.
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/calib/smoothquant.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::calib {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  return (a - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

int64_t w8a8_linears(nn::CausalLMImpl& m) {
  int64_t n = 0;
  for (const auto& item : m.named_modules()) {
    const auto l = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
    n += l && l->weight().format() == "w8a8";
  }
  return n;
}

std::string command(const train::TinyRun& t, const std::string& out, const std::string& extra,
                    const std::string& calib = "corpus.txt") {
  return "quantize " + t.model + " --method smoothquant --calib " + t.dir + "/" + calib +
         " --calib-samples 4 --calib-seq-len 64 --dtype fp32 --out " + out + " " + extra;
}

TEST(SmoothQuantRun, WritesTheSmoothedModelAndItsRecord) {
  train::TinyRun t;
  const auto ref = train::probe_logits(*nn::load_causal_lm(t.model, kFp32));
  const auto out = t.dir + "/sq";
  const auto r = test::run_qtune(command(t, out, "--alpha auto --smooth-down --smooth-only"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("smoothquant alpha auto ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("down_proj smoothed: 2 layers on 256 calibration tokens"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  const auto config = io::read_json_file(out + "/config.json");
  EXPECT_FALSE(config.contains("quantization_config"));
  EXPECT_EQ(config["torch_dtype"], "float32");
  const auto record = io::read_json_file(out + "/smoothquant.json");
  EXPECT_EQ(record["alpha"], "auto");
  EXPECT_EQ(record["smooth_down"], true);
  EXPECT_EQ(record["calibration_tokens"], 256);
  ASSERT_EQ(record["mappings"].size(), 3u);
  EXPECT_EQ(record["mappings"][2]["smooth"], "mlp.up_proj");
  ASSERT_EQ(record["layers"].size(), 2u);
  for (const auto& l : record["layers"]) {
    EXPECT_GE(l["alpha"].get<double>(), 0.0);
    EXPECT_LE(l["alpha"].get<double>(), 1.0);
    EXPECT_EQ(l["searched"].size(), 21u);
  }
  EXPECT_TRUE(fs::exists(out + "/tokenizer.json") || fs::exists(out + "/tokenizer.model"));
  EXPECT_LT(max_rel(train::probe_logits(*nn::load_causal_lm(out, kFp32)), ref), 2e-5);
  const auto source = io::SafetensorsFile::open(t.model + "/model.safetensors");
  const auto written = io::SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_FALSE(at::equal(written->tensor("model.layers.0.input_layernorm.weight"),
                         source->tensor("model.layers.0.input_layernorm.weight")));
  EXPECT_FALSE(at::equal(written->tensor("model.layers.0.mlp.down_proj.weight"),
                         source->tensor("model.layers.0.mlp.down_proj.weight")));
}

// Without --smooth-only the smoothed model is written as what serves it: a compressed-tensors W8A8 checkpoint.
TEST(SmoothQuantRun, WritesTheW8a8CheckpointOfTheSmoothedModel) {
  train::TinyRun t;
  const auto ref = train::probe_logits(*nn::load_causal_lm(t.model, kFp32));
  const auto out = t.dir + "/sq-w8a8";
  const auto r = test::run_qtune(command(t, out, "--alpha 0.5"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("w8a8 (int8 weights per channel, int8 inputs per token) of the smoothed model: 14 linears"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(out + ".smoothed"));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  EXPECT_EQ(io::read_json_file(out + "/config.json")["quantization_config"]["quant_method"], "compressed-tensors");
  EXPECT_EQ(io::read_json_file(out + "/smoothquant.json")["alpha"], 0.5);
  EXPECT_TRUE(fs::exists(out + "/tokenizer.json") || fs::exists(out + "/tokenizer.model"));
  auto m = nn::load_causal_lm(out, kFp32);
  EXPECT_EQ(w8a8_linears(*m), 14);
  // int8 weights and int8 inputs: the probe's logits move by a few percent of their largest on this tiny model.
  const double err = max_rel(train::probe_logits(*m), ref);
  std::printf("[ measured ] smoothed W8A8 against the fp32 source: %.3g of the largest logit\n", err);
  EXPECT_GT(err, 0);
  EXPECT_LT(err, 5e-2);
  // An existing --out is refused before any work, never overwritten.
  const auto again = test::run_qtune(command(t, out, "--alpha 0.5"));
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("exists"), std::string::npos) << again.err;
}

TEST(SmoothQuantRun, GptqAfterSmoothingWritesTheW8a8CheckpointOfGptqsInt8Codes) {
  train::TinyRun t;
  const auto ref = train::probe_logits(*nn::load_causal_lm(t.model, kFp32));
  const auto rtn = t.dir + "/sq", out = t.dir + "/sq-gptq";
  ASSERT_EQ(test::run_qtune(command(t, rtn, "")).code, 0);
  auto cmd = command(t, out, "");
  cmd.replace(cmd.find("--method smoothquant"), std::string("--method smoothquant").size(),
              "--method smoothquant+gptq");
  const auto r = test::run_qtune(cmd);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("GPTQ beat round-to-nearest on"), std::string::npos) << r.out;
  for (const auto* left : {".smoothed", ".gptq", ".tmp"}) EXPECT_FALSE(fs::exists(out + left)) << left;
  const auto q = io::read_json_file(out + "/config.json")["quantization_config"];
  EXPECT_EQ(q["quant_method"], "compressed-tensors");
  EXPECT_EQ(io::read_json_file(out + "/smoothquant.json")["alpha"], 0.5);
  // GPTQ's symmetric 8-bit grid spans -128 … 127 with scale 2·absmax/255: the row's largest negative weight is code
  // -128, which round-to-nearest's absmax/127 grid never reaches.
  const auto gptq_ckpt = io::ShardedCheckpoint::open(out), rtn_ckpt = io::ShardedCheckpoint::open(rtn);
  const auto name = std::string("model.layers.0.mlp.down_proj");
  const auto codes = gptq_ckpt->get_raw(name + ".weight"), rtn_codes = rtn_ckpt->get_raw(name + ".weight");
  ASSERT_EQ(codes.scalar_type(), at::kChar);
  EXPECT_EQ(codes.to(at::kInt).min().item<int>(), -128);
  EXPECT_EQ(rtn_codes.to(at::kInt).abs().max().item<int>(), 127);
  EXPECT_FALSE(at::equal(codes, rtn_codes));
  auto m = nn::load_causal_lm(out, kFp32);
  EXPECT_EQ(w8a8_linears(*m), 14);
  // The smoothed function with int8 weights and inputs: on this tiny random model (no outliers) that moves the probe's
  // logits by about 1% of their largest.
  const double err = max_rel(train::probe_logits(*m), ref);
  EXPECT_GT(err, 0);
  EXPECT_LT(err, 3e-2);
}

TEST(SmoothQuantRun, BadInputIsAClearErrorAndLeavesNothingBehind) {
  train::TinyRun t;
  const auto out = t.dir + "/sq";
  io::write_text_atomically(t.dir + "/short.txt", "Once upon a time there was a cat.\n");
  struct Case {
    std::string args, error, calib = "corpus.txt";
  };
  for (const auto& c : std::vector<Case>{
           {"--alpha 1.5", "--alpha 1.5: expected a migration strength in [0, 1]"},
           {"--alpha -0.1", "--alpha -0.1: expected a migration strength in [0, 1]"},
           {"--alpha half", "--alpha half: expected a migration strength in [0, 1]"},
           {"--smooth o_proj", "model.layers.*.self_attn.o_proj: no norm or linear precedes it that can absorb "
                               "SmoothQuant's scales"},
           {"--smooth qkv_proj", "--smooth qkv_proj: a llama layer has no such linear"},
           {"", "short.txt: ", "short.txt"},  // fewer tokens than one sequence
           {"", "are fewer than one calibration sequence of 64 (lower --calib-seq-len)", "short.txt"},
       }) {
    const auto r = test::run_qtune(command(t, out, c.args, c.calib));
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.err.find(c.error), std::string::npos) << c.args << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.args;
    EXPECT_FALSE(fs::exists(out + ".tmp")) << c.args;
  }
  SmoothQuantOptions o;
  EXPECT_NE(test::error_of([&] { smoothquant_model(t.model, {}, o, out); }).find("needs calibration sequences"),
            std::string::npos);
  o.alpha = 2;
  EXPECT_NE(test::error_of([&] { smoothquant_model(t.model, {{1, 2, 3}}, o, out); }).find("--alpha 2"),
            std::string::npos);
  o.alpha = 0.5;
  o.targets = {"down_proj"};  // smoothing down_proj alone is fine (up_proj absorbs it); o_proj is not
  EXPECT_EQ(smoothquant_mappings(io::ModelConfig::load(t.model), o).size(), 1u);
  o.targets = {"self_attn.o_proj"};
  EXPECT_NE(test::error_of([&] { smoothquant_model(t.model, {{1, 2, 3}}, o, out); }).find("self_attn.o_proj"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

}  // namespace
}  // namespace qtune::calib
