// The real pretrained stories260K in ../shared: qtune must reproduce the figures its README documents
// (token ids, logits, greedy text, held-out perplexity). Skipped with a message when ../shared is absent.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"
#include "qtune/eval/generate.h"
#include "qtune/eval/perplexity.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

struct Stories : ::testing::Test {
  void SetUp() override {
    QTUNE_REQUIRE_SHARED();
    dir = qtune::test::shared_dir() + "/models/stories260K";
    model = qtune::nn::load_causal_lm(dir, at::TensorOptions().dtype(at::kFloat));
    tok = std::make_unique<qtune::data::Tokenizer>(qtune::data::Tokenizer::load(dir, &model->config()));
    std::ifstream in(qtune::test::shared_dir() + "/reference/stories260K/reference_outputs.json");
    ref = nlohmann::json::parse(in);
  }
  std::string dir;
  qtune::nn::CausalLM model;
  std::unique_ptr<qtune::data::Tokenizer> tok;
  nlohmann::json ref;
};

TEST_F(Stories, PromptEncodesToDocumentedIds) {
  EXPECT_EQ(tok->encode("Once upon a time"), (std::vector<int64_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->vocab_size(), 512);
}

TEST_F(Stories, LogitsEqualReferenceForward) {
  auto ref_file = qtune::io::SafetensorsFile::open(qtune::test::shared_dir() + "/reference/stories260K/prompt_logits.safetensors");
  torch::NoGradGuard no_grad;
  auto logits = model->forward(ref_file->tensor("input_ids").unsqueeze(0))[0];
  EXPECT_LE((logits - ref_file->tensor("logits")).abs().max().item<double>(), 1e-4);
  // Documented top-5 of the last position.
  auto [values, indices] = logits[-1].topk(5);
  const std::vector<int64_t> ids(indices.data_ptr<int64_t>(), indices.data_ptr<int64_t>() + 5);
  EXPECT_EQ(ids, (std::vector<int64_t>{432, 383, 322, 353, 323}));
  EXPECT_NEAR(values[0].item<double>(), 17.7994, 1e-3);
  EXPECT_NEAR(values[1].item<double>(), 14.2813, 1e-3);
}

TEST_F(Stories, Greedy60TokensMatchDocumentedContinuation) {
  const auto prompt = tok->encode("Once upon a time");
  qtune::eval::GenerateOptions opts;
  opts.max_new_tokens = 60;
  auto result = qtune::eval::generate(*model, prompt, opts);
  EXPECT_EQ(result.tokens, ref["greedy_ids"].get<std::vector<int64_t>>());
  std::vector<int64_t> all(prompt);
  all.insert(all.end(), result.tokens.begin(), result.tokens.end());
  EXPECT_EQ(tok->decode(all), ref["greedy_full_text"].get<std::string>());
}

TEST_F(Stories, Greedy200FromBosReproducesLlama2cAndReencodes) {
  qtune::eval::GenerateOptions opts;
  opts.max_new_tokens = 200;
  auto result = qtune::eval::generate(*model, {1}, opts);
  const auto expected = ref["bos_only_greedy200_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(result.tokens, expected);
  const auto text = tok->decode(result.tokens);
  EXPECT_EQ(text, ref["bos_only_greedy200_text"].get<std::string>());
  auto reencoded = tok->encode(text, /*add_bos=*/false);
  EXPECT_EQ(reencoded, expected);
}

TEST_F(Stories, HeldOutPerplexityIs3_3169) {
  const auto text = qtune::data::read_text_file(qtune::test::shared_dir() + "/data/tinystories_valid_head.txt", "text");
  std::vector<std::vector<int64_t>> docs;
  for (const auto& doc : qtune::data::split_documents(text, "<|endoftext|>")) docs.push_back(tok->encode(doc));
  ASSERT_EQ(docs.size(), 22u);
  EXPECT_EQ(docs[0], ref["heldout"]["first_story_ids"].get<std::vector<int64_t>>());
  auto first = qtune::eval::document_perplexity(*model, {docs[0]}, 512);
  EXPECT_EQ(first.predicted_tokens, 169);
  EXPECT_NEAR(first.nll_sum, 213.7995, 2e-3);
  auto all = qtune::eval::document_perplexity(*model, docs, 512);
  EXPECT_EQ(all.predicted_tokens, 7158);
  EXPECT_NEAR(all.mean_nll(), 1.19902, 1e-5);
  EXPECT_NEAR(all.perplexity(), 3.3169, 5e-5);
}

TEST_F(Stories, TiedCheckpointIgnoresStoredLmHead) {
  // stories260K stores lm_head.weight although tied: transformers ties it to the embeddings anyway.
  EXPECT_TRUE(model->config().tie_word_embeddings);
  EXPECT_TRUE(model->lm_head_weight().is_same(model->trunk().embed_tokens->weight()));
}

}  // namespace
