// qtune init OUT_DIR --config CONFIG.json: a freshly initialised model (and tokenizer) as a Hugging Face
// directory, for tests, benchmarks and pretraining from scratch.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "commands.h"
#include "qtune/data/synthetic_corpus.h"
#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/atomic_file.h"
#include "qtune/nn/model_io.h"
#include "qtune/util/error.h"

namespace qtune::cli {
namespace {
namespace fs = std::filesystem;

struct InitArgs {
  std::string out_dir;
  std::string config_file;
  std::string tokenizer;
  std::string corpus_out;
  std::string tokenizer_corpus;
  uint64_t seed = 0;
};

int run_init(const InitArgs& args) {
  auto config = io::ModelConfig::load(args.config_file);
  fs::create_directories(args.out_dir);
  const fs::path out(args.out_dir);

  if (!args.tokenizer.empty()) {
    fs::path src(args.tokenizer);
    if (fs::is_directory(src)) src /= "tokenizer.model";
    if (!fs::exists(src)) fail("--tokenizer {}: no tokenizer.model there", args.tokenizer);
    fs::copy_file(src, out / "tokenizer.model", fs::copy_options::overwrite_existing);
  } else {
    // Train a BPE tokenizer on the given text (or the built-in synthetic corpus), sized to the config's vocabulary.
    const auto corpus_path = out / "tokenizer_corpus.tmp.txt";
    const auto corpus = args.tokenizer_corpus.empty() ? data::synthetic_corpus(20000, args.seed)
                                                      : data::read_text_file(args.tokenizer_corpus, "--tokenizer-corpus");
    io::write_text_atomically(corpus_path.string(), corpus);
    data::train_bpe_tokenizer(corpus_path.string(), (out / "tokenizer").string(), config.vocab_size);
    fs::remove(corpus_path);
    fs::remove(out / "tokenizer.vocab");
  }
  const auto tokenizer = data::Tokenizer::load((out / "tokenizer.model").string(), &config);
  config.bos_token_id = tokenizer.bos_id();
  config.eos_token_ids = {tokenizer.eos_id()};

  nn::RandomInit init(config, args.seed);
  nn::DenseLinearFactory factory(at::TensorOptions().dtype(at::kFloat));
  nn::CausalLMImpl model(config, factory, init, at::TensorOptions().dtype(at::kFloat));
  nn::save_pretrained(model, args.out_dir);
  nlohmann::json tok_config = {{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", tokenizer.piece(tokenizer.bos_id())},
                               {"eos_token", tokenizer.piece(tokenizer.eos_id())}, {"unk_token", tokenizer.piece(tokenizer.unk_id())},
                               {"add_bos_token", true}, {"add_eos_token", false}, {"legacy", true},
                               {"model_max_length", config.max_position_embeddings}};
  io::write_text_atomically((out / "tokenizer_config.json").string(), tok_config.dump(2) + "\n");
  if (!args.corpus_out.empty()) io::write_text_atomically(args.corpus_out, data::synthetic_corpus(400, args.seed + 1));
  fmt::print("wrote {}: {} ({} parameters, {} layers, vocab {}), random init with seed {}\n", args.out_dir,
             config.model_type, config.num_parameters(), config.num_hidden_layers, config.vocab_size, args.seed);
  return 0;
}

}  // namespace

void add_init(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("init", "Create a randomly initialised model directory from a config.json");
  auto args = std::make_shared<InitArgs>();
  cmd->add_option("OUT_DIR", args->out_dir, "Directory to write (config.json, model.safetensors, tokenizer.model)")
      ->required();
  cmd->add_option("--config", args->config_file, "A Hugging Face config.json (see configs/models/)")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Copy this tokenizer.model (default: train a BPE tokenizer on the built-in synthetic corpus)");
  cmd->add_option("--tokenizer-corpus", args->tokenizer_corpus, "Train the BPE tokenizer on this text file instead");
  cmd->add_option("--corpus-out", args->corpus_out, "Also write held-out synthetic text (e.g. for qtune eval)");
  cmd->add_option("--seed", args->seed, "Seed of the initialisation and the corpus")->capture_default_str();
  cmd->callback([&action, args] { action = [args] { return run_init(*args); }; });
}

}  // namespace qtune::cli
