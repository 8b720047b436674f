#include "qtune/data/tokenizer.h"

#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "qtune/data/bpe_tokenizer.h"
#include "qtune/data/foreign_tokenizer.h"
#include "qtune/data/gguf_tokenizer.h"
#include "qtune/data/sentencepiece_tokenizer.h"
#include "qtune/io/gguf.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::data {
namespace fs = std::filesystem;

namespace {

// tokenizer_config.json names special tokens either as strings or as {"content": "..."} objects.
std::optional<std::string> special_token(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// tokenizer_config.json: the special tokens by name and whether BOS/EOS are added, as transformers reads them.
void apply_tokenizer_config(const fs::path& file, const TokenizerBackend& backend, SpecialTokens& s) {
  const auto j = io::read_json_file(file.string());
  auto resolve = [&](const char* key, std::optional<int64_t>& slot) {
    if (auto name = special_token(j, key)) {
      if (auto id = backend.token_id(*name)) slot = *id;
    }
  };
  resolve("bos_token", s.bos);
  resolve("eos_token", s.eos);
  resolve("pad_token", s.pad);
  resolve("unk_token", s.unk);
  if (auto it = j.find("add_bos_token"); it != j.end() && it->is_boolean()) s.add_bos = it->get<bool>();
  if (auto it = j.find("add_eos_token"); it != j.end() && it->is_boolean()) s.add_eos = it->get<bool>();
}

// A directory without tokenizer.json or tokenizer.model: name a Tekken or tiktoken file it holds instead.
[[noreturn]] void fail_without_tokenizer(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file()) continue;
    // mistral-common's rule for a Tekken file: "tekken" in the name, ending in .json.
    if (name.find("tekken") != std::string::npos && ends_with(name, ".json")) fail_tekken(entry.path().string());
    if (ends_with(name, ".tiktoken") || is_tiktoken_file(entry.path().string())) fail_tiktoken(entry.path().string());
  }
  fail("{}: no tokenizer.json or tokenizer.model in the model directory", dir.string());
}

}  // namespace

Tokenizer Tokenizer::from_backend(std::shared_ptr<const TokenizerBackend> backend, std::string path) {
  const auto special = backend->special_tokens();
  return with_special_tokens(std::move(backend), std::move(path), special);
}

Tokenizer Tokenizer::with_special_tokens(std::shared_ptr<const TokenizerBackend> backend, std::string path,
                                         const SpecialTokens& s) {
  Tokenizer tok;
  tok.impl_ = std::move(backend);
  tok.path_ = std::move(path);
  tok.bos_ = s.bos.value_or(-1);
  tok.eos_ = s.eos.value_or(-1);
  tok.unk_ = s.unk.value_or(-1);
  tok.pad_ = s.pad;
  tok.add_bos_ = s.add_bos && s.bos;
  tok.add_eos_ = s.add_eos && s.eos;
  return tok;
}

Tokenizer Tokenizer::load(const std::string& path, const io::ModelConfig* config) {
  const fs::path p(path);
  if (!fs::exists(p)) fail("{}: not found (expected a model directory, tokenizer.json, tokenizer.model or .gguf)", path);
  std::shared_ptr<const TokenizerBackend> backend;
  std::optional<SpecialTokens> special;
  fs::path dir, file;
  if (fs::is_directory(p)) {
    dir = p;
    // As transformers: the fast tokenizer (tokenizer.json) when the directory has one.
    if (fs::exists(p / "tokenizer.json")) file = p / "tokenizer.json";
    else if (fs::exists(p / "tokenizer.model")) file = p / "tokenizer.model";
    else fail_without_tokenizer(p);
  } else {
    file = p;
    dir = p.parent_path();
  }
  if (ends_with(file.string(), ".gguf")) {
    const auto gguf = io::GgufFile::open(file.string());
    auto t = gguf_tokenizer(*gguf);
    backend = t.backend;
    special = t.special;
    dir.clear();  // the metadata is the whole tokenizer; files beside a .gguf belong to something else
  } else if (ends_with(file.string(), ".json")) {
    backend = BpeTokenizer::load(file.string());
  } else {
    backend = SentencePieceTokenizer::load(file.string());
  }
  SpecialTokens s = special ? *special : backend->special_tokens();
  if (!dir.empty() && fs::exists(dir / "tokenizer_config.json")) apply_tokenizer_config(dir / "tokenizer_config.json", *backend, s);

  if (config != nullptr) {
    if (config->bos_token_id) s.bos = *config->bos_token_id;
    if (!config->eos_token_ids.empty()) s.eos = config->eos_token_ids.front();
    if (config->pad_token_id) s.pad = *config->pad_token_id;
  }
  auto tok = with_special_tokens(backend, file.string(), s);
  if (config != nullptr && tok.vocab_size() > config->vocab_size)
    fail("{}: tokenizer has {} tokens but the model's vocab_size is {}", tok.path_, tok.vocab_size(), config->vocab_size);
  return tok;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  auto ids = impl_->encode(text);
  std::vector<int64_t> out;
  out.reserve(ids.size() + 2);
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  out.insert(out.end(), ids.begin(), ids.end());
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> kept;
  kept.reserve(ids.size());
  for (auto id : ids)
    if (id != bos_ && id != eos_ && !(pad_ && id == *pad_)) kept.push_back(id);
  return impl_->decode(kept, /*skip_special=*/true);
}

std::string Tokenizer::piece(int64_t id) const { return impl_->piece(id); }

int64_t Tokenizer::piece_id(const std::string& piece) const { return impl_->token_id(piece).value_or(unk_); }

std::optional<int64_t> Tokenizer::token_id(const std::string& piece) const { return impl_->token_id(piece); }

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }

void copy_tokenizer_files(const std::string& source, const std::string& out_dir) {
  const fs::path src(source), out(out_dir);
  if (io::is_gguf_path(source)) {
    save_tokenizer_files(gguf_tokenizer(*io::GgufFile::open(source)), out_dir);
    return;
  }
  const bool is_dir = fs::is_directory(src);
  const fs::path from = is_dir ? src : src.parent_path();
  const std::string given = ends_with(src.string(), ".json") ? "tokenizer.json" : "tokenizer.model";
  if (!is_dir) fs::copy_file(src, out / given, fs::copy_options::overwrite_existing);
  // chat_template.jinja (and additional_chat_templates/*.jinja) is where transformers 5 saves the chat templates.
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "chat_template.jinja"}) {
    if (!is_dir && given == name) continue;  // the given file is the tokenizer
    if (fs::exists(from / name)) fs::copy_file(from / name, out / name, fs::copy_options::overwrite_existing);
  }
  if (fs::is_directory(from / "additional_chat_templates"))
    fs::copy(from / "additional_chat_templates", out / "additional_chat_templates",
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

void train_bpe_tokenizer(const std::string& corpus_file, const std::string& out_prefix, int64_t vocab_size,
                         bool remove_extra_whitespaces) {
  // The settings llama2.c uses for its small Llama tokenizers: BPE, byte fallback, digits split.
  const std::string args = fmt::format(
      "--input={} --model_prefix={} --model_type=bpe --vocab_size={} --character_coverage=1.0 "
      "--byte_fallback=true --split_digits=true --allow_whitespace_only_pieces=true --normalization_rule_name=identity "
      "--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=2 --minloglevel=2 --remove_extra_whitespaces={}",
      corpus_file, out_prefix, vocab_size, remove_extra_whitespaces ? "true" : "false");
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) fail("{}: tokenizer training failed: {}", corpus_file, status.ToString());
}

}  // namespace qtune::data
