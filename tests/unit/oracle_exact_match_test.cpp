// eval --exact-match ends a reply at its template's end of turn: Gemma's <end_of_turn> is not the vocabulary's EOS
// (before, Gemma 3 270M trained on the Quillby facts answered "The Quillby is made by Zentaro Labs." and went on
// past <end_of_turn> into other text: 0/20 where it now scores 19/20). A decoder whose layers are zeroed answers
// from the last token's embedding alone: <end_of_turn> after an ordinary token, an ordinary token after
// <end_of_turn>, so that a reply not stopped at the end of turn shows text after it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>

#include "qtune/data/chat_template.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/exact_match.h"
#include "qtune/io/hf_config.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/linear.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace qtune {
namespace {

// A model that predicts `end` after any token but `end`, and `other` after `end`.
nn::CausalLM alternating(int64_t end, int64_t other, int64_t vocab) {
  nlohmann::json j = {{"model_type", "llama"}, {"hidden_size", 32},  {"intermediate_size", 64},
                      {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", vocab},   {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 128}};
  const auto cfg = io::ModelConfig::from_json(j, "test");
  nn::RandomInit init(cfg, 1);
  nn::DenseLinearFactory factory(at::TensorOptions().dtype(at::kFloat));
  auto model = std::make_shared<nn::CausalLMImpl>(cfg, factory, init, at::TensorOptions().dtype(at::kFloat));
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    if (p.key().find("embed_tokens") != std::string::npos) p.value().fill_(1.0);
    else if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
    else p.value().zero_();
  }
  for (auto& p : model->named_parameters())
    if (p.key().find("embed_tokens") != std::string::npos) p.value()[end].fill_(-1.0);
  model->lm_head_weight()[end].fill_(1.0);
  model->lm_head_weight()[other].fill_(-1.0);
  return model;
}

TEST(OracleExactMatch, AReplyEndsAtItsTemplatesEndOfTurnNotOnlyAtEos) {
  const auto dir = test::oracle_dir() + "/chat_templates/families/gemma3";
  if (!std::filesystem::exists(dir + "/tokenizer.json"))
    GTEST_FAIL() << dir << " is missing: run through ctest (the oracle_chat_templates fixture)";
  const auto tok = data::Tokenizer::load(dir);
  const auto end = tok.token_id("<end_of_turn>");
  ASSERT_TRUE(end.has_value());
  ASSERT_NE(*end, tok.eos_id());
  const int64_t other = 10;  // an ordinary piece of the vocabulary
  ASSERT_FALSE(tok.decode({other}).empty());
  auto model = alternating(*end, other, tok.vocab_size());
  data::Record r;
  r.source = "test:1";
  r.messages = {{"user", "Who makes it?"}, {"assistant", "x"}};
  const auto result = eval::exact_match(*model, tok, {r}, data::ChatFormat(data::ChatTemplate::Gemma), 8);
  ASSERT_EQ(result.total, 1);
  // The first token generated is the end of turn: the reply is empty, not what follows it.
  EXPECT_EQ(result.checks[0].got, "") << "the reply ran past <end_of_turn>";
}

}  // namespace
}  // namespace qtune
