#include "qtune/data/gguf_tokenizer.h"

#include <array>
#include <cstring>

#include "qtune/data/bpe_tokenizer.h"
#include "qtune/data/sentencepiece_tokenizer.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "qtune/util/error.h"

namespace qtune::data {
namespace {

using json = nlohmann::json;

// llama.cpp's token types (llama_token_type), which are also SentencePiece's ModelProto.SentencePiece.Type values.
constexpr int64_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

// Pre-tokenizers by tokenizer.ggml.pre, as llama.cpp's llama-vocab.cpp reads them (its regexes in HF tokenizers'
// spelling; its table in its own dialect), with the flags llama.cpp sets for the name. The first entry of each kind is
// the name an export writes.
struct PreTokenizer {
  const char* name;
  // Split(Isolated) steps, in order, before ByteLevel(use_regex=false); none: ByteLevel's own regex (GPT-2's).
  std::array<const char*, 4> splits;
  bool digits;         // Digits(individual) first, as SmolLM / StarCoder split numbers
  bool ignore_merges;  // a word in the vocabulary is its token, whatever the merges say
  bool add_bos;        // llama.cpp adds BOS when the file has no tokenizer.ggml.add_bos_token
};

constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kTekken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT (a missing tokenizer.ggml.pre too): punctuation runs, then GPT-2's regex,
// then digit runs, then digits in threes.
constexpr const char* kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr std::array<const char*, 4> kDefault = {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"};
constexpr std::array<const char*, 4> kNone = {};
constexpr std::array<const char*, 4> kLlama3Split = {kLlama3};
constexpr std::array<const char*, 4> kQwen2Split = {kQwen2};
constexpr std::array<const char*, 4> kTekkenSplit = {kTekken};

const PreTokenizer kPreTokenizers[] = {
    // name           splits        digits ignore_merges add_bos
    {"gpt-2",         kNone,        false, false, false},
    {"gpt2",          kNone,        false, false, false},
    {"default",       kDefault,     false, false, false},
    {"llama-bpe",     kLlama3Split, false, true,  true},
    {"llama3",        kLlama3Split, false, true,  true},
    {"llama-v3",      kLlama3Split, false, true,  true},
    {"falcon3",       kLlama3Split, false, true,  true},
    {"pixtral",       kLlama3Split, false, true,  true},
    {"smaug-bpe",     kLlama3Split, false, false, false},
    {"qwen2",         kQwen2Split,  false, false, false},
    {"deepseek-r1-qwen", kQwen2Split, false, false, false},
    {"tekken",        kTekkenSplit, false, true,  true},
    {"smollm",        kNone,        true,  false, false},
    {"starcoder",     kNone,        true,  false, false},
    {"refact",        kNone,        true,  false, false},
    {"codeshell",     kNone,        true,  false, false},
    {"command-r",     kNone,        true,  false, false},
};

// The tokenizer.json pre_tokenizer llama.cpp's entry stands for.
json pre_tokenizer_json(const PreTokenizer& pre) {
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                     {"use_regex", pre.splits[0] == nullptr}};
  json steps = json::array();
  if (pre.digits) steps.push_back({{"type", "Digits"}, {"individual_digits", true}});
  for (const char* split : pre.splits)
    if (split != nullptr)
      steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", split}}}, {"behavior", "Isolated"}, {"invert", false}});
  steps.push_back(byte_level);
  return steps.size() == 1 ? steps[0] : json{{"type", "Sequence"}, {"pretokenizers", steps}};
}

// What decides how a pre-tokenizer splits (offset trimming does not): its steps' types, regexes, behaviours and
// flags, with a one-step Sequence the same as its step.
json pre_tokenizer_essentials(const json& pre) {
  if (!pre.is_object()) return nullptr;
  const auto type = pre.value("type", "");
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    json steps = json::array();
    for (const auto& p : pre["pretokenizers"]) steps.push_back(pre_tokenizer_essentials(p));
    return steps.size() == 1 ? steps[0] : steps;
  }
  json e = {{"type", type}};
  if (type == "ByteLevel") {
    e["use_regex"] = pre.value("use_regex", true);
    e["add_prefix_space"] = pre.value("add_prefix_space", true);
  } else if (type == "Split") {
    e["pattern"] = pre.value("pattern", json(nullptr));
    e["behavior"] = pre.value("behavior", "");
    e["invert"] = pre.value("invert", false);
  } else if (type == "Digits") {
    e["individual_digits"] = pre.value("individual_digits", false);
  } else {
    e["all"] = pre;
  }
  return e;
}

const PreTokenizer& pre_tokenizer(const io::GgufFile& f) {
  const std::string pre = f.string("tokenizer.ggml.pre").value_or("default");
  for (const auto& p : kPreTokenizers)
    if (pre == p.name) return p;
  std::string known;
  for (const auto& p : kPreTokenizers) known += std::string(known.empty() ? "" : ", ") + p.name;
  fail("{}: tokenizer.ggml.pre '{}' is not supported (supported: {})", f.path(), pre, known);
}

std::vector<std::string> string_array(const io::GgufFile& f, const char* key) {
  const auto* arr = f.array(key);
  if (arr == nullptr) fail("{}: metadata '{}' is missing", f.path(), key);
  std::vector<std::string> out;
  out.reserve(arr->size());
  for (const auto& v : *arr) {
    if (!v.is_string()) fail("{}: metadata '{}' must be an array of strings", f.path(), key);
    out.push_back(v.get<std::string>());
  }
  return out;
}

// tokenizer.ggml.token_type; nullopt when the file has none (llama.cpp then types every token NORMAL).
std::optional<std::vector<int64_t>> token_types(const io::GgufFile& f, size_t n) {
  const auto* arr = f.array("tokenizer.ggml.token_type");
  if (arr == nullptr) return std::nullopt;
  if (arr->size() != n) fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(), arr->size(), n);
  std::vector<int64_t> types(n, kNormal);
  for (size_t i = 0; i < n; ++i) {
    if (!(*arr)[i].is_number_integer()) fail("{}: tokenizer.ggml.token_type must hold integers", f.path());
    types[i] = (*arr)[i].get<int64_t>();
    if (types[i] < 0 || types[i] > kByte) fail("{}: tokenizer.ggml.token_type[{}] = {} (expected 0..6)", f.path(), i, types[i]);
  }
  return types;
}

std::optional<int64_t> token_id_key(const io::GgufFile& f, const char* key, size_t n) {
  auto id = f.integer(key);
  if (!id) return std::nullopt;
  if (*id < 0 || *id >= static_cast<int64_t>(n)) {
    if (*id == -1 || *id == 0xFFFFFFFF) return std::nullopt;  // writers spell "none" this way
    fail("{}: {} = {} is outside the {}-token vocabulary", f.path(), key, *id, n);
  }
  return id;
}

// llama.cpp's default when the key is absent or "none": a SentencePiece vocabulary's <unk> 0, <s> 1, </s> 2.
std::optional<int64_t> token_id_key(const io::GgufFile& f, const char* key, size_t n, std::optional<int64_t> fallback) {
  auto id = token_id_key(f, key, n);
  if (!id && fallback && *fallback < static_cast<int64_t>(n)) return fallback;
  return id;
}

bool is_byte_piece(const std::string& t) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// The SentencePiece types a "llama" vocabulary is built with, from llama.cpp's reading of the file: the token at
// unknown_token_id is the unknown one whatever its type (Gemma 3 types <unk> CONTROL), other UNKNOWN-typed tokens
// (Phi-3's padding) are special tokens like CONTROL ones (SentencePiece allows one <unk>), and without a type array
// the <0xXX> tokens are still the byte fallback llama.cpp encodes with.
std::vector<int64_t> sentencepiece_types(const std::vector<std::string>& tokens,
                                         const std::optional<std::vector<int64_t>>& file_types,
                                         std::optional<int64_t> unk) {
  std::vector<int64_t> types(tokens.size(), kNormal);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t t = file_types ? (*file_types)[i] : is_byte_piece(tokens[i]) ? kByte : kNormal;
    types[i] = t == 0 ? kNormal : t == kUnknown ? kControl : t;  // UNDEFINED: llama.cpp treats it as normal
  }
  if (unk) types[static_cast<size_t>(*unk)] = kUnknown;
  return types;
}

// The tokens llama.cpp cuts out of a text before its tokenizer runs (it parses special tokens, as qtune's encode
// does): those typed CONTROL, USER_DEFINED or UNKNOWN.
std::vector<int64_t> matched_token_ids(const std::optional<std::vector<int64_t>>& file_types) {
  std::vector<int64_t> ids;
  if (file_types)
    for (size_t i = 0; i < file_types->size(); ++i) {
      const int64_t t = (*file_types)[i];
      if (t == kControl || t == kUserDefined || t == kUnknown) ids.push_back(static_cast<int64_t>(i));
    }
  return ids;
}

// --- a SentencePiece ModelProto, written by hand (protobuf wire format) -------------------------------------------
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void tag(std::string& out, int field, int wire) { varint(out, (static_cast<uint64_t>(field) << 3) | wire); }
void field_varint(std::string& out, int field, uint64_t v) { tag(out, field, 0); varint(out, v); }
void field_bytes(std::string& out, int field, const std::string& bytes) {
  tag(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}
void field_float(std::string& out, int field, float v) {
  tag(out, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}

// sentencepiece_model.proto field numbers: ModelProto{pieces=1, trainer_spec=2, normalizer_spec=3};
// SentencePiece{piece=1, score=2, type=3}; TrainerSpec{model_type=3, vocab_size=4, byte_fallback=35, unk_id=40,
// bos_id=41, eos_id=42, pad_id=43}; NormalizerSpec{name=1, add_dummy_prefix=3, remove_extra_whitespaces=4,
// escape_whitespaces=5}.
std::string sentencepiece_proto(const io::GgufFile& f, const std::vector<std::string>& tokens,
                                const std::vector<int64_t>& types, const SpecialTokens& s) {
  std::vector<float> scores(tokens.size(), 0.0f);
  if (const auto* arr = f.array("tokenizer.ggml.scores")) {
    if (arr->size() != tokens.size())
      fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(), arr->size(), tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (!(*arr)[i].is_number()) fail("{}: tokenizer.ggml.scores must hold numbers", f.path());
      scores[i] = (*arr)[i].get<float>();
    }
  }
  std::string proto;
  bool byte_fallback = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string piece;
    field_bytes(piece, 1, tokens[i]);
    field_float(piece, 2, scores[i]);
    const int64_t type = types[i];
    field_varint(piece, 3, static_cast<uint64_t>(type));
    field_bytes(proto, 1, piece);
    byte_fallback |= type == kByte;
  }
  auto id = [](const std::optional<int64_t>& v) { return static_cast<uint64_t>(v ? *v : -1); };
  std::string trainer;
  field_varint(trainer, 3, 2);  // BPE: llama.cpp's SPM tokenizer merges by score, as SentencePiece's BPE does
  field_varint(trainer, 4, tokens.size());
  field_varint(trainer, 35, byte_fallback ? 1 : 0);
  field_varint(trainer, 40, id(s.unk));
  field_varint(trainer, 41, id(s.bos));
  field_varint(trainer, 42, id(s.eos));
  field_varint(trainer, 43, id(s.pad));
  field_bytes(proto, 2, trainer);
  std::string normalizer;
  field_bytes(normalizer, 1, "identity");
  field_varint(normalizer, 3, f.boolean("tokenizer.ggml.add_space_prefix").value_or(true) ? 1 : 0);
  field_varint(normalizer, 4, 0);  // llama.cpp keeps every space
  field_varint(normalizer, 5, 1);
  field_bytes(proto, 3, normalizer);
  return proto;
}

// --- a byte-level BPE tokenizer.json ------------------------------------------------------------------------------
json byte_level_tokenizer_json(const io::GgufFile& f, const PreTokenizer& pre, const std::vector<std::string>& tokens,
                               const std::vector<int64_t>& types, const SpecialTokens& s) {
  const auto merges = string_array(f, "tokenizer.ggml.merges");
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    // As transformers' GGUF loader: control tokens are special added tokens, user-defined ones plain added tokens.
    if (types[i] == kControl || types[i] == kUserDefined)
      added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", types[i] == kControl}});
  }
  json post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  if (s.add_bos && s.bos) {
    const std::string bos = tokens[*s.bos];
    post = {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                      {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", {*s.bos}}, {"tokens", {bos}}}}}}};
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer_json(pre)},
          {"post_processor", post},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", s.unk ? json(tokens[*s.unk]) : json(nullptr)},
            {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
            {"byte_fallback", false}, {"ignore_merges", pre.ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
}

}  // namespace

GgufTokenizer gguf_tokenizer(const io::GgufFile& f) {
  const auto model = f.string("tokenizer.ggml.model");
  if (!model) fail("{}: the file carries no tokenizer (metadata tokenizer.ggml.model is missing)", f.path());
  if (*model != "llama" && *model != "gpt2")
    fail("{}: tokenizer.ggml.model '{}' is not supported (expected llama or gpt2)", f.path(), *model);
  const bool spm = *model == "llama";
  const auto tokens = string_array(f, "tokenizer.ggml.tokens");
  if (tokens.empty()) fail("{}: tokenizer.ggml.tokens is empty", f.path());
  const auto file_types = token_types(f, tokens.size());
  const PreTokenizer* pre = spm ? nullptr : &pre_tokenizer(f);

  GgufTokenizer t;
  auto& s = t.special;
  const size_t n = tokens.size();
  auto spm_default = [&](int64_t id) { return spm ? std::optional<int64_t>(id) : std::nullopt; };
  s.bos = token_id_key(f, "tokenizer.ggml.bos_token_id", n, spm_default(1));
  s.eos = token_id_key(f, "tokenizer.ggml.eos_token_id", n, spm_default(2));
  s.unk = token_id_key(f, "tokenizer.ggml.unknown_token_id", n, spm_default(0));
  s.pad = token_id_key(f, "tokenizer.ggml.padding_token_id", n);
  // llama.cpp's defaults: a SentencePiece vocabulary adds BOS unless the file says otherwise, a BPE one as its
  // pre-tokenizer says (Llama 3, Tekken, Pixtral, Falcon 3: yes).
  s.add_bos = f.boolean("tokenizer.ggml.add_bos_token").value_or(spm || pre->add_bos);
  s.add_eos = f.boolean("tokenizer.ggml.add_eos_token").value_or(false);
  t.chat_template = f.string("tokenizer.chat_template").value_or("");

  if (spm) {
    t.sentencepiece_proto = sentencepiece_proto(f, tokens, sentencepiece_types(tokens, file_types, s.unk), s);
    t.backend = SentencePieceTokenizer::from_serialized_proto(t.sentencepiece_proto, f.path(),
                                                              matched_token_ids(file_types));
  } else {
    t.tokenizer_json = byte_level_tokenizer_json(f, *pre, tokens, file_types.value_or(std::vector<int64_t>(n, kNormal)), s);
    t.backend = BpeTokenizer::from_json(t.tokenizer_json, f.path());
  }
  return t;
}

std::optional<std::string> gguf_pre_tokenizer_name(const json& pre_tokenizer) {
  const auto wanted = pre_tokenizer_essentials(pre_tokenizer);
  for (const auto& p : kPreTokenizers)
    if (pre_tokenizer_essentials(pre_tokenizer_json(p)) == wanted) return std::string(p.name);
  return std::nullopt;
}

void save_tokenizer_files(const GgufTokenizer& t, const std::string& dir) {
  json config = {{"add_bos_token", t.special.add_bos}, {"add_eos_token", t.special.add_eos}, {"clean_up_tokenization_spaces", false}};
  auto name = [&](const std::optional<int64_t>& id) { return id ? json(t.backend->piece(*id)) : json(nullptr); };
  config["bos_token"] = name(t.special.bos);
  config["eos_token"] = name(t.special.eos);
  config["unk_token"] = name(t.special.unk);
  config["pad_token"] = name(t.special.pad);
  if (!t.chat_template.empty()) config["chat_template"] = t.chat_template;
  if (!t.tokenizer_json.is_null()) {
    config["tokenizer_class"] = "PreTrainedTokenizerFast";
    io::write_text_atomically(dir + "/tokenizer.json", t.tokenizer_json.dump(1) + "\n");
  } else {
    config["tokenizer_class"] = "LlamaTokenizer";
    config["legacy"] = true;  // text after a special token starts with "▁", as llama.cpp tokenizes it
    // Without the dummy prefix (Gemma: tokenizer.ggml.add_space_prefix false) transformers' LlamaTokenizer must not
    // prepend "▁" either; it reads add_prefix_space, not the proto's normalizer.
    if (const auto* sp = dynamic_cast<const SentencePieceTokenizer*>(t.backend.get()); sp && !sp->adds_dummy_prefix())
      config["add_prefix_space"] = false;
    io::write_text_atomically(dir + "/tokenizer.model", t.sentencepiece_proto);
  }
  io::write_text_atomically(dir + "/tokenizer_config.json", config.dump(2) + "\n");
}

}  // namespace qtune::data
