// qtune export --gguf / --gguf-adapter on a run trained here, checked by qtune reading the files back: the f32 GGUF
// reproduces the trained model (metadata, SentencePiece vocabulary, Q/K permutation), the adapter file carries each
// module's A and B (scales folded where one alpha cannot express them), the type mix follows llama-quantize's rules,
// and bad input is refused with nothing written. llama.cpp itself reads these files in oracle_llama_cpp_test.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "qtune/data/tokenizer.h"
#include "qtune/export/gguf_export.h"
#include "qtune/export/gguf_type_mix.h"
#include "qtune/export/trained_model.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;
using quant::GgmlType;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// rsLoRA with a smaller rank on v_proj: no single alpha gives every module its scale, so the adapter export folds.
struct TrainedRun {
  train::TinyRun t;
  std::string run = t.dir + "/run";
  explicit TrainedRun(std::vector<std::string> extra = {}) {
    std::vector<std::string> o = {"train.max_steps=6", "optim.lr=2e-2"};
    o.insert(o.end(), extra.begin(), extra.end());
    train::run_training(t.recipe(o), train::quiet());
  }
};

TEST(GgufExport, F32FileReproducesTheTrainedModel) {
  TrainedRun r({"lora.rslora=true", "lora.rank_pattern={\"v_proj\": 4}"});
  auto trained = load_trained_model(r.run, "", kFp32, nullptr);
  const auto expected = train::probe_logits(*trained.model);
  const auto out = r.t.dir + "/model-f32.gguf";
  const auto res = test::run_qtune("export " + r.run + " --gguf " + out + " --type f32");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_TRUE(contains(res.out, "GGUF f32")) << res.out;
  EXPECT_TRUE(contains(res.out, "the GGUF as read back")) << res.out;
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  auto file = io::GgufFile::open(out);
  EXPECT_EQ(file->require_string("general.architecture"), "llama");
  EXPECT_EQ(file->integer("general.file_type"), 0);
  EXPECT_EQ(file->integer("llama.block_count"), 2);
  EXPECT_EQ(file->integer("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(file->require_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(file->array("tokenizer.ggml.tokens")->size(), 400u);
  EXPECT_EQ(file->find_tensor("output.weight"), nullptr) << "tied embeddings: llama.cpp reuses token_embd";
  for (const auto& t : file->header().tensors) EXPECT_EQ(t.type, GgmlType::F32) << t.name;
  // Q rows go out in llama.cpp's interleaved order: the stored tensor is the permuted merged weight.
  const auto q = file->dequantize(file->tensor_info("blk.0.attn_q.weight"));
  const auto layers = lora::lora_layers(*trained.model);
  ASSERT_FALSE(layers.empty());
  const auto& lora_q = layers.front();
  ASSERT_EQ(lora_q.first, "model.layers.0.self_attn.q_proj");
  EXPECT_TRUE(test::bitwise_equal(q, io::permute_rotary_rows(lora_q.second->merged_weight(), 4)));
  EXPECT_TRUE(test::bitwise_equal(io::unpermute_rotary_rows(q, 4), lora_q.second->merged_weight()));

  // qtune reads it back as the trained model, vocabulary included.
  auto back = nn::load_causal_lm(out, kFp32);
  EXPECT_LT((train::probe_logits(*back) - expected).abs().max().item<double>(), 1e-4);
  const auto tok = data::Tokenizer::load(r.t.model), tok_back = data::Tokenizer::load(out);
  // This tokenizer collapses whitespace runs, which llama.cpp's never does: the export says so, and texts
  // without runs (or leading and trailing spaces, which it strips) tokenize the same.
  EXPECT_TRUE(contains(res.err, "remove_extra_whitespaces")) << res.err;
  for (const std::string text : {"Tom had a red ball.", "one two, three.", "", "x=1; y==2?"}) {
    EXPECT_EQ(tok_back.encode(text), tok.encode(text)) << text;
    EXPECT_EQ(tok_back.decode(tok_back.encode(text)), tok.decode(tok.encode(text))) << text;
  }
  EXPECT_EQ(tok_back.bos_id(), tok.bos_id());
  EXPECT_EQ(tok_back.eos_id(), tok.eos_id());
  EXPECT_EQ(tok_back.adds_bos(), tok.adds_bos());
}

TEST(GgufExport, AdapterCarriesEveryModuleAndFoldsScalesOneAlphaCannotGive) {
  TrainedRun r({"lora.rslora=true", "lora.rank_pattern={\"v_proj\": 4}"});
  auto trained = load_trained_model(r.run, "", kFp32, nullptr);
  const auto out = r.t.dir + "/adapter.gguf";
  const auto res = test::run_qtune("export " + r.run + " --gguf-adapter " + out);
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_TRUE(contains(res.out, "folded")) << res.out;
  auto file = io::GgufFile::open(out);
  EXPECT_EQ(file->require_string("general.type"), "adapter");
  EXPECT_EQ(file->require_string("adapter.type"), "lora");
  EXPECT_EQ(file->number("adapter.lora.alpha"), 0.0);
  const auto layers = lora::lora_layers(*trained.model);
  EXPECT_EQ(file->header().tensors.size(), 2 * layers.size());
  for (const auto& [name, l] : layers) {
    SCOPED_TRACE(name);
    const auto base = io::GgufLayout{}.gguf_name(name + ".weight");
    const auto a = file->dequantize(file->tensor_info(base + ".lora_a"));
    const auto b = file->dequantize(file->tensor_info(base + ".lora_b"));
    EXPECT_TRUE(test::bitwise_equal(a, l->lora_A().detach()));
    auto scaled = l->lora_B().detach() * l->scale();
    if (name.find("q_proj") != std::string::npos) scaled = io::permute_rotary_rows(scaled, 4);
    if (name.find("k_proj") != std::string::npos) scaled = io::permute_rotary_rows(scaled, 2);
    EXPECT_TRUE(test::bitwise_equal(b, scaled));
  }

  // Plain LoRA at one rank: alpha is written as it is and B is left alone.
  TrainedRun plain;
  const auto out2 = plain.t.dir + "/adapter.gguf";
  ASSERT_EQ(test::run_qtune("export " + plain.run + " --gguf-adapter " + out2 + " --adapter-type f16").code, 0);
  auto f2 = io::GgufFile::open(out2);
  EXPECT_EQ(f2->number("adapter.lora.alpha"), 16.0);
  EXPECT_EQ(f2->header().tensors.front().type, GgmlType::F16);
}

TEST(GgufExport, CalibrationTextGivesAnImportanceMatrixThatChangesTheCodes) {
  TrainedRun r;
  const auto plain = r.t.dir + "/plain.gguf", calibrated = r.t.dir + "/calibrated.gguf";
  ASSERT_EQ(test::run_qtune("export " + r.run + " --gguf " + plain + " --type q4_0 --no-quality-check").code, 0);
  const auto res = test::run_qtune("export " + r.run + " --gguf " + calibrated + " --type q4_0 --calib " + r.t.dir +
                                   "/corpus.txt --calib-samples 16 --calib-seq-len 64");
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_TRUE(contains(res.out, "importance matrix: 14 linears from 1024 calibration tokens (16 sequences of 64)"))
      << res.out;
  auto a = io::GgufFile::open(plain), b = io::GgufFile::open(calibrated);
  const auto& ta = a->tensor_info("blk.0.attn_q.weight");
  const auto& tb = b->tensor_info("blk.0.attn_q.weight");
  ASSERT_EQ(ta.nbytes, tb.nbytes);
  EXPECT_NE(std::memcmp(a->data(ta), b->data(tb), ta.nbytes), 0) << "the importance matrix changed no code";
  // llama-quantize's guard: with an imatrix, the first eighth of ffn_down layers (here layer 0 of 2... n/8 = 0: none).
  EXPECT_EQ(b->tensor_info("blk.0.ffn_down.weight").type, GgmlType::Q4_0);
}

TEST(GgufExport, TypeMixFollowsLlamaQuantize) {
  const auto& q4km = parse_gguf_file_type("q4_k_m");
  EXPECT_EQ(q4km.llama_ftype, 15u);
  GgufTypeMix mix(q4km, 32, /*tied=*/false, /*importance=*/false);
  std::vector<int> more_bits;
  for (int i = 0; i < 32; ++i) {
    const auto v = mix.choose("blk." + std::to_string(i) + ".attn_v.weight", {1024, 4096});
    const auto d = mix.choose("blk." + std::to_string(i) + ".ffn_down.weight", {4096, 11008 + 256 - 11008 % 256});
    EXPECT_EQ(v, d) << i;
    if (v == GgmlType::Q6_K) more_bits.push_back(i);
    else EXPECT_EQ(v, GgmlType::Q4_K) << i;
    EXPECT_EQ(mix.choose("blk." + std::to_string(i) + ".attn_q.weight", {4096, 4096}), GgmlType::Q4_K);
  }
  // use_more_bits: the first and last eighth, and every third layer between.
  EXPECT_EQ(more_bits, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}));
  EXPECT_EQ(mix.choose("output.weight", {32000, 4096}), GgmlType::Q6_K);
  EXPECT_EQ(mix.choose("token_embd.weight", {32000, 4096}), GgmlType::Q4_K);
  EXPECT_EQ(mix.choose("blk.0.attn_norm.weight", {4096}), GgmlType::F32);
  // Rows that are not whole 256-blocks fall back, as llama-quantize does (SmolLM2's 576).
  GgufTypeMix small(q4km, 30, /*tied=*/true, false);
  EXPECT_EQ(small.choose("blk.0.attn_q.weight", {576, 576}), GgmlType::Q5_0);
  EXPECT_EQ(small.choose("blk.0.attn_v.weight", {192, 576}), GgmlType::Q8_0);  // Q6_K's fallback
  EXPECT_EQ(small.choose("token_embd.weight", {49152, 576}), GgmlType::Q8_0);   // tied: the output's rule
  GgufTypeMix q4(parse_gguf_file_type("q4_0"), 30, true, false);
  EXPECT_EQ(q4.choose("blk.0.ffn_down.weight", {576, 1536}), GgmlType::Q4_0);
  GgufTypeMix q4i(parse_gguf_file_type("q4_0"), 30, true, /*importance=*/true);
  EXPECT_EQ(q4i.choose("blk.0.ffn_down.weight", {576, 1536}), GgmlType::Q4_1);
  GgufTypeMix odd(parse_gguf_file_type("q8_0"), 2, false, false);
  EXPECT_EQ(odd.choose("blk.0.ffn_down.weight", {64, 172}), GgmlType::F16);  // not even 32-blocks
  EXPECT_TRUE(contains(test::error_of([] { parse_gguf_file_type("q3_k_xl"); }), "q4_k_m"));
}

TEST(GgufExport, BadInputIsRefusedAndNothingIsWritten) {
  TrainedRun r({"lora.modules_to_save=[lm_head]"});
  const auto out = r.t.dir + "/x.gguf";
  auto res = test::run_qtune("export " + r.run + " --gguf " + out + " --type q3_k_xl");
  EXPECT_NE(res.code, 0);
  EXPECT_TRUE(contains(res.err, "--type 'q3_k_xl'") && contains(res.err, "q4_k_m")) << res.err;
  res = test::run_qtune("export " + r.run + " --gguf-adapter " + out);
  EXPECT_NE(res.code, 0);
  EXPECT_TRUE(contains(res.err, "modules_to_save")) << res.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  res = test::run_qtune("export " + r.run + " --gguf " + out + " --merged " + r.t.dir + "/m");
  EXPECT_NE(res.code, 0);
  EXPECT_TRUE(contains(res.err, "exactly one of")) << res.err;
  io::write_text_atomically(out, "keep me");
  res = test::run_qtune("export " + r.run + " --gguf " + out + " --type q8_0 --no-quality-check");
  EXPECT_NE(res.code, 0);
  EXPECT_TRUE(contains(res.err, "exists")) << res.err;
  EXPECT_EQ(test::read_file(out), "keep me");
}

}  // namespace
}  // namespace qtune::exporting
