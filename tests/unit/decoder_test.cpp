// Properties of the decoder that hold for any weights: KV-cached decoding equals a full forward, packed
// samples do not see each other, the sliding window hides old keys, saving and loading round-trips.
#include "qtune/nn/decoder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <fstream>
#include <set>

#include "qtune/eval/generate.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"

namespace {

using namespace qtune;

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

io::ModelConfig tiny_config(const std::string& type = "llama") {
  nlohmann::json j = {{"model_type", type},      {"hidden_size", 32},       {"intermediate_size", 48},
                      {"num_hidden_layers", 2},  {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", 50},        {"rms_norm_eps", 1e-5},     {"initializer_range", 0.2},
                      {"max_position_embeddings", 64}};
  return io::ModelConfig::from_json(j, "test");
}

nn::CausalLM random_model(const io::ModelConfig& cfg, uint64_t seed = 3) {
  nn::RandomInit init(cfg, seed);
  nn::DenseLinearFactory factory(kFp32);
  return std::make_shared<nn::CausalLMImpl>(cfg, factory, init, kFp32);
}

at::Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed = 5) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t}, gen, at::kLong);
}

TEST(Decoder, KVCacheDecodingEqualsFullForward) {
  for (const std::string type : {"llama", "mistral"}) {
    auto cfg = tiny_config(type);
    if (type == "mistral") cfg.sliding_window = 4;
    auto model = random_model(cfg);
    torch::NoGradGuard no_grad;
    auto ids = random_ids(1, 12, cfg.vocab_size);
    auto full = model->forward(ids);
    nn::KVCache cache(cfg.num_hidden_layers);
    nn::ForwardOptions opts;
    opts.cache = &cache;
    auto first = model->forward(ids.narrow(1, 0, 5), opts);  // prefill
    std::vector<at::Tensor> steps{first};
    for (int64_t t = 5; t < 12; ++t) steps.push_back(model->forward(ids.narrow(1, t, 1), opts));
    EXPECT_EQ(cache.length(), 12);
    EXPECT_LE((at::cat(steps, 1) - full).abs().max().item<double>(), 1e-5) << type;
  }
}

TEST(Decoder, PackedSegmentsDoNotSeeEachOther) {
  auto cfg = tiny_config();
  auto model = random_model(cfg);
  torch::NoGradGuard no_grad;
  auto a = random_ids(1, 5, cfg.vocab_size, 1), b = random_ids(1, 7, cfg.vocab_size, 2);
  nn::ForwardOptions packed;
  packed.position_ids = at::cat({at::arange(5, at::kLong), at::arange(7, at::kLong)}).unsqueeze(0);
  packed.segment_ids = at::cat({at::zeros({5}, at::kLong), at::ones({7}, at::kLong)}).unsqueeze(0);
  auto out = model->forward(at::cat({a, b}, 1), packed);
  EXPECT_LE((out.narrow(1, 0, 5) - model->forward(a)).abs().max().item<double>(), 1e-5);
  EXPECT_LE((out.narrow(1, 5, 7) - model->forward(b)).abs().max().item<double>(), 1e-5);
}

TEST(Decoder, SlidingWindowHidesKeysOutsideTheWindow) {
  auto cfg = tiny_config("mistral");
  cfg.sliding_window = 3;
  auto model = random_model(cfg);
  torch::NoGradGuard no_grad;
  auto ids = random_ids(1, 10, cfg.vocab_size);
  auto changed = ids.clone();
  changed.index_put_({0, 0}, (ids[0][0].item<int64_t>() + 1) % cfg.vocab_size);
  auto x = model->forward(ids), y = model->forward(changed);
  // With 2 layers and a window of 3, token 0 can reach positions up to 0 + 2 * (3 - 1) = 4 only.
  EXPECT_GT((x.narrow(1, 0, 5) - y.narrow(1, 0, 5)).abs().max().item<double>(), 1e-4);
  EXPECT_LE((x.narrow(1, 5, 5) - y.narrow(1, 5, 5)).abs().max().item<double>(), 1e-6);
}

TEST(Decoder, AttentionMaskMatchesDefinition) {
  auto q = at::arange(4, 8, at::kLong).unsqueeze(0), k = at::arange(0, 8, at::kLong).unsqueeze(0);
  auto mask = nn::make_attention_mask(q, k, 3).allowed[0][0];
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 8; ++j)
      EXPECT_EQ(mask[i][j].item<bool>(), j <= i + 4 && (i + 4) - j < 3) << i << "," << j;
  EXPECT_TRUE(nn::make_attention_mask(k, k, std::nullopt).is_causal);
  EXPECT_FALSE(nn::make_attention_mask(k.narrow(1, 7, 1), k, std::nullopt).allowed.defined());
}

TEST(Decoder, SavePretrainedRoundTripsAndUsesHfNames) {
  auto cfg = tiny_config();
  auto model = random_model(cfg);
  const auto dir = test::temp_dir();
  nn::save_pretrained(*model, dir);
  auto ckpt = io::ShardedCheckpoint::open(dir);
  EXPECT_TRUE(ckpt->has("model.embed_tokens.weight"));
  EXPECT_TRUE(ckpt->has("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_TRUE(ckpt->has("model.layers.0.post_attention_layernorm.weight"));
  EXPECT_TRUE(ckpt->has("lm_head.weight"));
  EXPECT_EQ(ckpt->names().size(), 2u + 2u * 9u + 1u);
  auto loaded = nn::load_causal_lm(dir, kFp32);
  torch::NoGradGuard no_grad;
  auto ids = random_ids(2, 6, cfg.vocab_size);
  EXPECT_TRUE(at::equal(loaded->forward(ids), model->forward(ids)));
}

TEST(Decoder, UntiedCheckpointWithoutLmHeadIsAnError) {
  auto cfg = tiny_config();
  cfg.tie_word_embeddings = true;
  auto model = random_model(cfg);
  const auto dir = test::temp_dir();
  nn::save_pretrained(*model, dir);
  auto config_json = cfg.to_json();
  config_json["tie_word_embeddings"] = false;
  std::ofstream(dir + "/config.json") << config_json.dump();
  const auto msg = test::error_of([&] { nn::load_causal_lm(dir, kFp32); });
  EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tie_word_embeddings"), std::string::npos) << msg;
}

TEST(Decoder, CheckpointShapeMismatchNamesTheTensor) {
  auto cfg = tiny_config();
  auto model = random_model(cfg);
  const auto dir = test::temp_dir();
  nn::save_pretrained(*model, dir);
  auto config_json = cfg.to_json();
  config_json["intermediate_size"] = 64;
  std::ofstream(dir + "/config.json") << config_json.dump();
  const auto msg = test::error_of([&] { nn::load_causal_lm(dir, kFp32); });
  EXPECT_NE(msg.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[48, 32]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[64, 32]"), std::string::npos) << msg;
}

TEST(Decoder, Bf16ForwardTracksFp32) {
  auto cfg = tiny_config();
  auto model = random_model(cfg);
  const auto dir = test::temp_dir();
  nn::save_pretrained(*model, dir);
  auto bf16 = nn::load_causal_lm(dir, at::TensorOptions().dtype(at::kBFloat16));
  torch::NoGradGuard no_grad;
  auto ids = random_ids(1, 8, cfg.vocab_size);
  auto a = model->forward(ids), b = bf16->forward(ids).to(at::kFloat);
  EXPECT_EQ(bf16->forward(ids).scalar_type(), at::kBFloat16);
  EXPECT_LE((a - b).abs().max().item<double>(), 0.05 * a.abs().max().item<double>());
}

TEST(Sampling, GreedyTopKOneAndSeedDeterminism) {
  auto cfg = tiny_config();
  auto model = random_model(cfg);
  eval::GenerateOptions greedy;
  greedy.max_new_tokens = 10;
  auto g = eval::generate(*model, {1, 2, 3}, greedy).tokens;
  eval::GenerateOptions topk1 = greedy;
  topk1.sampling.temperature = 1.0;
  topk1.sampling.top_k = 1;
  EXPECT_EQ(eval::generate(*model, {1, 2, 3}, topk1).tokens, g);
  eval::GenerateOptions sampled = greedy;
  sampled.sampling.temperature = 1.5;
  sampled.sampling.seed = 42;
  auto s1 = eval::generate(*model, {1, 2, 3}, sampled).tokens;
  EXPECT_EQ(eval::generate(*model, {1, 2, 3}, sampled).tokens, s1);
  sampled.sampling.seed = 43;
  EXPECT_NE(eval::generate(*model, {1, 2, 3}, sampled).tokens, s1);
}

TEST(Sampling, TopPKeepsOnlyTheNucleus) {
  auto logits = at::tensor({5.0f, 4.0f, 0.0f, -1.0f, -2.0f});
  eval::SamplingOptions opts;
  opts.temperature = 1.0;
  opts.top_p = 0.5;  // token 0 alone holds ~0.71 of the mass
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(eval::sample_token(logits, opts, gen), 0);
  opts.top_p = 0.95;  // tokens 0 and 1 (~0.97)
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(eval::sample_token(logits, opts, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
}

TEST(Generate, StopsAtStopTokenAndAtContextEnd) {
  auto cfg = tiny_config();
  cfg.max_position_embeddings = 8;
  auto model = random_model(cfg);
  eval::GenerateOptions opts;
  opts.max_new_tokens = 50;
  auto r = eval::generate(*model, {1, 2, 3}, opts);
  EXPECT_EQ(r.stop_reason, "context full");
  EXPECT_EQ(r.tokens.size(), 6u);  // positions 3..7 get tokens, plus the one predicted at the last position
  opts.stop_ids = {r.tokens[1]};
  auto stopped = eval::generate(*model, {1, 2, 3}, opts);
  EXPECT_EQ(stopped.stop_reason, "stop token");
  EXPECT_LE(stopped.tokens.size(), 2u);
}

}  // namespace

namespace {

using namespace qtune;

// config.json's attention_dropout is applied to the attention probabilities in training mode only, as transformers
// does; evaluation is the dropout-free model.
TEST(Decoder, AttentionDropoutAppliesInTrainingOnly) {
  auto cfg = tiny_config();
  auto plain = random_model(cfg);
  auto with_dropout = cfg.to_json();
  with_dropout["attention_dropout"] = 0.5;  // as config.json says it
  auto dropped = random_model(io::ModelConfig::from_json(with_dropout, "config.json"));
  const auto ids = random_ids(2, 10, cfg.vocab_size);
  torch::NoGradGuard no_grad;
  plain->eval();
  dropped->eval();
  const auto reference = plain->forward(ids);
  EXPECT_TRUE(test::bitwise_equal(dropped->forward(ids), reference)) << "eval mode has no dropout";
  dropped->train();
  at::manual_seed(1);
  const auto a = dropped->forward(ids);
  at::manual_seed(1);
  EXPECT_TRUE(test::bitwise_equal(dropped->forward(ids), a)) << "the masks come from the seeded generator";
  at::manual_seed(2);
  EXPECT_FALSE(at::equal(dropped->forward(ids), a));
  EXPECT_GT((a - reference).abs().max().item<double>(), 1e-3) << "training mode drops attention";
  plain->train();
  EXPECT_TRUE(test::bitwise_equal(plain->forward(ids), reference)) << "attention_dropout 0 changes nothing";
  // A value out of range is refused, naming the key.
  with_dropout["attention_dropout"] = 1.0;
  const auto msg = test::error_of([&] { io::ModelConfig::from_json(with_dropout, "config.json"); });
  EXPECT_NE(msg.find("attention_dropout"), std::string::npos) << msg;
}

// A temperature so small that logits / T overflow float samples the argmax instead of NaN probabilities.
TEST(Sampling, TinyTemperaturesSampleTheArgmax) {
  auto logits = at::tensor({1.0f, 3.5f, 3.0f, -2.0f});
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  for (double t : {1e-38, 1e-300, 1e-6, 2e-4, 1e-3}) {
    eval::SamplingOptions o;
    o.temperature = t;
    for (int i = 0; i < 20; ++i) EXPECT_EQ(eval::sample_token(logits, o, gen), 1) << "temperature " << t;
  }
}

}  // namespace
