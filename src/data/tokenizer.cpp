#include "qtune/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "qtune/io/hf_config.h"
#include "qtune/util/error.h"

namespace qtune::data {
namespace fs = std::filesystem;

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

// tokenizer_config.json names special tokens either as strings or as {"content": "..."} objects.
std::optional<std::string> special_token(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path, const io::ModelConfig* config) {
  fs::path model_path(path);
  fs::path dir;
  if (fs::is_directory(model_path)) {
    dir = model_path;
    model_path /= "tokenizer.model";
  }
  if (!fs::exists(model_path))
    fail("{}: tokenizer.model not found (qtune reads SentencePiece tokenizers; tokenizer.json alone is not supported)",
         model_path.string());
  auto impl = std::make_shared<Impl>();
  const auto status = impl->sp.Load(model_path.string());
  if (!status.ok()) fail("{}: not a valid SentencePiece model: {}", model_path.string(), status.ToString());

  Tokenizer tok;
  tok.path_ = model_path.string();
  tok.impl_ = impl;
  tok.bos_ = impl->sp.bos_id();
  tok.eos_ = impl->sp.eos_id();
  tok.unk_ = impl->sp.unk_id();
  if (impl->sp.pad_id() >= 0) tok.pad_ = impl->sp.pad_id();

  if (!dir.empty() && fs::exists(dir / "tokenizer_config.json")) {
    nlohmann::json j;
    try {
      std::ifstream in(dir / "tokenizer_config.json");
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", (dir / "tokenizer_config.json").string(), e.what());
    }
    auto resolve = [&](const char* key) -> std::optional<int64_t> {
      auto name = special_token(j, key);
      if (!name) return std::nullopt;
      const int id = impl->sp.PieceToId(*name);
      if (id == impl->sp.unk_id() && *name != impl->sp.IdToPiece(impl->sp.unk_id())) return std::nullopt;
      return id;
    };
    if (auto id = resolve("bos_token")) tok.bos_ = *id;
    if (auto id = resolve("eos_token")) tok.eos_ = *id;
    if (auto id = resolve("pad_token")) tok.pad_ = *id;
  }
  if (config != nullptr) {
    if (config->bos_token_id) tok.bos_ = *config->bos_token_id;
    if (!config->eos_token_ids.empty()) tok.eos_ = config->eos_token_ids.front();
    if (config->pad_token_id) tok.pad_ = *config->pad_token_id;
    if (tok.vocab_size() > config->vocab_size)
      fail("{}: tokenizer has {} pieces but the model's vocab_size is {}", tok.path_, tok.vocab_size(),
           config->vocab_size);
  }
  return tok;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) fail("{}: cannot encode text: {}", path_, status.ToString());
  std::vector<int64_t> out;
  out.reserve(ids.size() + 2);
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  out.insert(out.end(), ids.begin(), ids.end());
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  const int64_t n = vocab_size();
  for (auto id : ids) {
    if (id < 0 || id >= n) continue;  // ids past the tokenizer (padded vocab) decode to nothing
    if (id == bos_ || id == eos_ || (pad_ && id == *pad_)) continue;
    pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = impl_->sp.Decode(pieces, &text);
  if (!status.ok()) fail("{}: cannot decode ids: {}", path_, status.ToString());
  return text;
}

std::string Tokenizer::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return impl_->sp.IdToPiece(static_cast<int>(id));
}

int64_t Tokenizer::piece_id(const std::string& piece) const { return impl_->sp.PieceToId(piece); }

int64_t Tokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

void copy_tokenizer_files(const std::string& source, const std::string& out_dir) {
  namespace fs = std::filesystem;
  const fs::path src(source), out(out_dir);
  const bool is_dir = fs::is_directory(src);
  const fs::path from = is_dir ? src : src.parent_path();
  if (!is_dir) fs::copy_file(src, out / "tokenizer.model", fs::copy_options::overwrite_existing);
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    if (!is_dir && std::string(name) == "tokenizer.model") continue;  // the given file is the tokenizer
    if (fs::exists(from / name)) fs::copy_file(from / name, out / name, fs::copy_options::overwrite_existing);
  }
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
