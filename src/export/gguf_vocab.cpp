#include "qtune/export/gguf_vocab.h"

#include <filesystem>

#include "qtune/data/chat_template_match.h"
#include "qtune/data/gguf_tokenizer.h"
#include "qtune/data/sentencepiece_tokenizer.h"
#include "qtune/io/gguf.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using io::GgufValueType;

// llama.cpp's token types (the SentencePiece piece types).
constexpr int kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;  // "llama" only
  std::vector<int> types;
  void pad_to(int64_t n, float score) {
    while (static_cast<int64_t>(tokens.size()) < n) {
      tokens.push_back("[PAD" + std::to_string(tokens.size()) + "]");
      scores.push_back(score);
      types.push_back(kUnused);
    }
  }
};

fs::path dir_of(const std::string& source) {
  return fs::is_directory(source) ? fs::path(source) : fs::path(source).parent_path();
}

// tokenizer_config.json's added_tokens_decoder: {id: {content, special}}, as the converter applies it.
void apply_added_tokens(const fs::path& dir, Vocab& v) {
  const auto file = dir / "tokenizer_config.json";
  if (!fs::exists(file)) return;
  const auto config = io::read_json_file(file.string());
  if (!config.contains("added_tokens_decoder") || !config["added_tokens_decoder"].is_object()) return;
  for (const auto& [key, token] : config["added_tokens_decoder"].items()) {
    size_t id = 0;
    try {
      id = std::stoul(key);
    } catch (const std::exception&) {
      fail("{}: added_tokens_decoder key '{}' is not a token id", file.string(), key);
    }
    if (!token.is_object() || !token.contains("content") || !token["content"].is_string())
      fail("{}: added_tokens_decoder[{}] needs a string 'content'", file.string(), key);
    if (id >= v.tokens.size()) v.pad_to(static_cast<int64_t>(id) + 1, -10000.0f);
    const auto content = token["content"].get<std::string>();
    if (token.value("special", false)) {
      v.tokens[id] = content;
      v.types[id] = kControl;
      v.scores[id] = -1000.0f;
    } else {
      // User-defined pieces are matched in raw text by llama.cpp, where a space is a space, not "▁".
      std::string text = content;
      for (size_t p; (p = text.find("\xE2\x96\x81")) != std::string::npos;) text.replace(p, 3, " ");
      v.tokens[id] = text;
      v.types[id] = kUserDefined;
      v.scores[id] = -1000.0f;
    }
  }
}

void write_vocab(io::GgufMetadata& m, const Vocab& v, bool with_scores) {
  m.set_array("tokenizer.ggml.tokens", GgufValueType::STRING, v.tokens);
  if (with_scores) m.set_array("tokenizer.ggml.scores", GgufValueType::FLOAT32, v.scores);
  m.set_array("tokenizer.ggml.token_type", GgufValueType::INT32, v.types);
}

void sentencepiece_vocab(io::GgufMetadata& m, const std::string& model_file, const fs::path& dir, int64_t n_vocab,
                         const std::function<void(const std::string&)>& warn) {
  const auto sp = data::SentencePieceTokenizer::load(model_file);
  if (sp->removes_extra_whitespaces() && warn)
    warn(model_file + " collapses runs of whitespace (remove_extra_whitespaces), which llama.cpp does not do: texts "
         "with repeated spaces will tokenize differently in the GGUF");
  Vocab v;
  for (const auto& p : sp->pieces()) {
    v.tokens.push_back(p.text);
    v.scores.push_back(p.score);
    v.types.push_back(p.type);
  }
  apply_added_tokens(dir, v);
  v.pad_to(n_vocab, -10000.0f);
  m.set_string("tokenizer.ggml.model", "llama");
  m.set_string("tokenizer.ggml.pre", "default");
  write_vocab(m, v, true);
  m.set_bool("tokenizer.ggml.add_space_prefix", sp->adds_dummy_prefix());
}

void byte_level_vocab(io::GgufMetadata& m, const std::string& file, int64_t n_vocab,
                      const std::function<void(const std::string&)>& warn) {
  const auto j = io::read_json_file(file);
  if (warn && j.contains("normalizer") && !j["normalizer"].is_null())
    warn(file + " has a normalizer (" + j["normalizer"].value("type", "?") + "), which llama.cpp does not apply: "
         "texts it would change tokenize differently in the GGUF");
  if (warn && j.contains("added_tokens"))
    for (const auto& t : j["added_tokens"])
      if (t.value("lstrip", false) || t.value("rstrip", false)) {
        warn(file + ": llama.cpp ignores the lstrip/rstrip of added tokens such as '" + t.value("content", "") +
             "': spaces around them tokenize differently in the GGUF");
        break;
      }
  const auto& model = j.contains("model") ? j["model"] : json();
  if (model.value("type", "") != "BPE" || !model.contains("vocab") || !model.contains("merges"))
    fail("{}: only a BPE model (model.type BPE with vocab and merges) can be written to GGUF", file);
  const auto pre = data::gguf_pre_tokenizer_name(j.value("pre_tokenizer", json()));
  if (!pre)
    fail("{}: llama.cpp has no pre-tokenizer that splits as this pre_tokenizer does ({}); a GGUF of it would "
         "tokenize differently", file, j.value("pre_tokenizer", json()).dump().substr(0, 200));
  Vocab v;
  auto put = [&](int64_t id, const std::string& text, int type) {
    if (id < 0 || id > (int64_t{1} << 24)) fail("{}: token id {} is out of range", file, id);
    if (id >= static_cast<int64_t>(v.tokens.size())) {
      v.tokens.resize(id + 1);
      v.types.resize(id + 1, 0);
    }
    v.tokens[id] = text;
    v.types[id] = type;
  };
  for (const auto& [text, id] : model["vocab"].items()) put(id.get<int64_t>(), text, kNormal);
  if (j.contains("added_tokens"))
    for (const auto& t : j["added_tokens"]) put(t.at("id").get<int64_t>(), t.at("content").get<std::string>(),
                                                t.value("special", false) ? kControl : kUserDefined);
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.types[i] == 0) {  // a hole in the ids
      v.tokens[i] = "[PAD" + std::to_string(i) + "]";
      v.types[i] = kUnused;
    }
  v.scores.assign(v.tokens.size(), 0.0f);
  v.pad_to(n_vocab, 0.0f);
  json merges = json::array();
  for (const auto& mg : model["merges"]) {
    if (mg.is_string()) merges.push_back(mg);
    else if (mg.is_array() && mg.size() == 2) merges.push_back(mg[0].get<std::string>() + " " + mg[1].get<std::string>());
    else fail("{}: model.merges entries must be \"a b\" or [\"a\", \"b\"]", file);
  }
  m.set_string("tokenizer.ggml.model", "gpt2");
  m.set_string("tokenizer.ggml.pre", *pre);
  write_vocab(m, v, false);
  m.set_array("tokenizer.ggml.merges", GgufValueType::STRING, merges);
}

void special_ids(io::GgufMetadata& m, const data::Tokenizer& tok) {
  auto id = [&](const char* key, int64_t v) {
    if (v >= 0) m.set_u32(key, static_cast<uint32_t>(v));
  };
  id("tokenizer.ggml.bos_token_id", tok.bos_id());
  id("tokenizer.ggml.eos_token_id", tok.eos_id());
  id("tokenizer.ggml.unknown_token_id", tok.unk_id());
  if (tok.pad_id()) id("tokenizer.ggml.padding_token_id", *tok.pad_id());
  m.set_bool("tokenizer.ggml.add_bos_token", tok.adds_bos());
  m.set_bool("tokenizer.ggml.add_eos_token", tok.adds_eos());
}

}  // namespace

io::GgufMetadata gguf_vocab_metadata(const std::string& source, const data::Tokenizer& tok, int64_t n_vocab,
                                     const std::function<void(const std::string&)>& warn) {
  io::GgufMetadata m;
  if (io::is_gguf_path(source)) {
    const auto file = io::GgufFile::open(source);
    for (const auto& [key, type] : file->header().value_types)
      if (key.rfind("tokenizer.", 0) == 0) m.copy_from(file->header(), key);
    if (!m.contains("tokenizer.ggml.model")) fail("{}: the base GGUF carries no tokenizer to export", source);
    return m;
  }
  const auto dir = dir_of(source);
  const bool is_file = fs::is_regular_file(source);
  const auto sp_file = is_file && fs::path(source).extension() == ".model" ? fs::path(source) : dir / "tokenizer.model";
  const auto json_file = is_file && fs::path(source).extension() == ".json" ? fs::path(source) : dir / "tokenizer.json";
  // convert_hf_to_gguf.py's order for the llama architecture: SentencePiece first, then tokenizer.json.
  if (fs::exists(sp_file) && !(is_file && fs::path(source).extension() == ".json"))
    sentencepiece_vocab(m, sp_file.string(), dir, n_vocab, warn);
  else if (fs::exists(json_file))
    byte_level_vocab(m, json_file.string(), n_vocab, warn);
  else
    fail("{}: no tokenizer.model or tokenizer.json to write into the GGUF", source);
  special_ids(m, tok);
  if (const auto t = data::find_model_chat_template(source)) m.set_string("tokenizer.chat_template", t->jinja);
  return m;
}

}  // namespace qtune::exporting
