// qtune tokenize MODEL (TEXT | --text FILE) [--json]: the ids (and pieces) the model's tokenizer gives, as llama.cpp's
// tokenize tool and HF's tokenizer do; --decode "1 2 3" goes the other way.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"
#include "qtune/util/error.h"

namespace qtune::cli {
namespace {

struct TokenizeArgs {
  std::string model, text, text_file, decode;
  bool json = false, no_special = false, ids_only = false;
};

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  std::string cleaned = s;
  for (auto& c : cleaned)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream in(cleaned);
  std::string word;
  while (in >> word) {
    try {
      size_t used = 0;
      ids.push_back(std::stoll(word, &used));
      if (used != word.size()) throw std::invalid_argument(word);
    } catch (const std::exception&) {
      fail("--decode: '{}' is not a token id (expected integers separated by spaces or commas)", word);
    }
  }
  return ids;
}

int run_tokenize(const TokenizeArgs& a) {
  const auto tok = data::Tokenizer::load(a.model);
  if (!a.decode.empty()) {
    const auto ids = parse_ids(a.decode);
    for (auto id : ids)
      if (id < 0 || id >= tok.vocab_size()) fail("--decode: id {} is outside the {}-token vocabulary", id, tok.vocab_size());
    const auto text = tok.backend().decode(ids, /*skip_special=*/a.no_special);
    if (a.json) fmt::print("{}\n", nlohmann::json({{"ids", ids}, {"text", text}}).dump());
    else fmt::print("{}\n", text);
    return 0;
  }
  if (a.text.empty() == a.text_file.empty()) fail("give the text to tokenize, or --text FILE (one of them)");
  const auto text = a.text_file.empty() ? a.text : data::read_text_file(a.text_file, "--text");
  const auto ids = a.no_special ? tok.encode(text, false, false) : tok.encode(text);
  if (a.json) {
    nlohmann::json pieces = nlohmann::json::array();
    for (auto id : ids) pieces.push_back(tok.piece(id));
    fmt::print("{}\n", nlohmann::json({{"ids", ids}, {"pieces", pieces}, {"count", ids.size()}}).dump());
  } else if (a.ids_only) {
    fmt::print("{}\n", fmt::join(ids, " "));
  } else {
    for (auto id : ids) fmt::print("{:>8} -> {}\n", id, nlohmann::json(tok.piece(id)).dump());
    fmt::print("{} tokens ({} tokenizer {}{})\n", ids.size(), tok.backend().kind(), tok.path(),
               a.no_special ? "" : tok.adds_bos() ? ", BOS added" : "");
  }
  return 0;
}

}  // namespace

void add_tokenize(CLI::App& app, Action& action) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand("tokenize", "Show the token ids of a text (or the text of ids) with a model's tokenizer");
  cmd->add_option("MODEL", args->model, "Model directory, tokenizer.json, tokenizer.model or .gguf")->required();
  cmd->add_option("TEXT", args->text, "Text to tokenize");
  cmd->add_option("--text", args->text_file, "Tokenize this UTF-8 file instead")->check(CLI::ExistingFile);
  cmd->add_option("--decode", args->decode, "Decode these ids (\"1 2 3\" or \"[1, 2, 3]\") instead");
  cmd->add_flag("--no-special", args->no_special,
                "Encode without the BOS/EOS the tokenizer adds (special tokens written in the text still become "
                "their ids, as in llama.cpp and transformers); decode without special tokens (<unk> included)");
  cmd->add_flag("--ids", args->ids_only, "Print only the ids, space separated");
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->callback([&action, args] { action = [args] { return run_tokenize(*args); }; });
}

}  // namespace qtune::cli
