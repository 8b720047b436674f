// calib/importance.h: the importance matrix a model built through the collector records is llama.cpp's imatrix —
// the mean over calibration tokens of each linear's squared input, per column — checked against the inputs computed
// by hand for layer 0 (RMSNorm of the embeddings); linears that share an input record the same; calibration text is
// cut into sequences with the tokenizer's BOS.
#include <gtest/gtest.h>

#include "qtune/calib/importance.h"
#include "qtune/io/atomic_file.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

using qtune::calib::ImportanceCollector;

qtune::io::ModelConfig tiny_config() {
  nlohmann::json j = {{"model_type", "llama"},  {"hidden_size", 32},          {"intermediate_size", 48},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 4},   {"num_key_value_heads", 2},
                      {"vocab_size", 100},      {"rms_norm_eps", 1e-5},       {"max_position_embeddings", 64}};
  return qtune::io::ModelConfig::from_json(j, "tiny");
}

TEST(Importance, MeanSquaredInputPerColumn) {
  const auto config = tiny_config();
  qtune::nn::RandomInit init(config, 3);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  qtune::nn::DenseLinearFactory dense(options);
  ImportanceCollector collector(dense);
  qtune::nn::CausalLMImpl model(config, collector, init, options);
  const std::vector<std::vector<int64_t>> seqs = {{1, 5, 9, 13, 17, 21}, {2, 4, 8, 16, 32, 64, 99}};
  const auto m = collector.collect(model, seqs);
  EXPECT_EQ(m.tokens, 13);
  EXPECT_EQ(m.columns.size(), 2u * 7u);

  // Layer 0's attention input is RMSNorm(embeddings): its squares, averaged over all 13 tokens.
  std::map<std::string, at::Tensor> p;
  for (const auto& kv : model.named_parameters()) p[kv.key()] = kv.value().detach();
  at::Tensor sum = at::zeros({32}, at::kDouble);
  for (const auto& s : seqs) {
    const auto e = p.at("model.embed_tokens.weight").index_select(0, at::tensor(s, at::kLong)).to(at::kDouble);
    const auto x = e * at::rsqrt(e.square().mean(-1, true) + 1e-5) * p.at("model.layers.0.input_layernorm.weight").to(at::kDouble);
    sum += x.square().sum(0);
  }
  const auto expected = (sum / 13.0).to(at::kFloat);
  const auto q = m.columns.at("model.layers.0.self_attn.q_proj.weight");
  ASSERT_EQ(q.sizes(), expected.sizes());
  EXPECT_LT((q - expected).abs().max().item<double>(), 1e-5 * expected.abs().max().item<double>());
  // Same input, same statistics.
  for (const char* other : {"k_proj", "v_proj"})
    EXPECT_TRUE(qtune::test::bitwise_equal(m.columns.at(std::string("model.layers.0.self_attn.") + other + ".weight"), q));
  EXPECT_TRUE(qtune::test::bitwise_equal(m.columns.at("model.layers.1.mlp.gate_proj.weight"),
                                         m.columns.at("model.layers.1.mlp.up_proj.weight")));
  EXPECT_EQ(m.columns.at("model.layers.1.mlp.down_proj.weight").size(0), 48);
  // Observing changes nothing: the same logits as the model built without the collector.
  qtune::nn::CausalLMImpl plain(config, dense, init, options);
  torch::NoGradGuard no_grad;
  const auto ids = at::tensor(seqs[0], at::kLong).view({1, -1});
  EXPECT_TRUE(qtune::test::bitwise_equal(model.forward(ids), plain.forward(ids)));
  // Parameter names are the wrapped linears' own.
  EXPECT_TRUE(p.count("model.layers.0.self_attn.q_proj.weight"));
}

TEST(Importance, CalibrationSequencesCutTheTextWithBos) {
  const auto dir = qtune::test::temp_dir();
  std::filesystem::create_directories(dir);
  qtune::io::write_text_atomically(dir + "/corpus.txt", "the cat sat on the mat. the dog sat on the log.");
  // A byte-level stand-in is not needed: stories-like SentencePiece models add BOS; here, shared's stories260K.
  QTUNE_REQUIRE_SHARED();
  const auto tok = qtune::data::Tokenizer::load(qtune::test::shared_dir() + "/models/stories260K");
  const auto ids = tok.encode(qtune::test::read_file(dir + "/corpus.txt"), false);
  const auto seqs = qtune::calib::calibration_sequences(dir + "/corpus.txt", tok, 5, 0);
  ASSERT_EQ(seqs.size(), ids.size() / 4);
  for (size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_EQ(seqs[i].size(), 5u);
    EXPECT_EQ(seqs[i][0], tok.bos_id());
    EXPECT_EQ(std::vector<int64_t>(seqs[i].begin() + 1, seqs[i].end()),
              std::vector<int64_t>(ids.begin() + 4 * i, ids.begin() + 4 * i + 4));
  }
  EXPECT_EQ(qtune::calib::calibration_sequences(dir + "/corpus.txt", tok, 5, 2).size(), 2u);
  EXPECT_NE(qtune::test::error_of([&] { qtune::calib::calibration_sequences(dir + "/corpus.txt", tok, 4096, 0); })
                .find("fewer than one calibration sequence"),
            std::string::npos);
}

}  // namespace
