#include "qtune/data/foreign_tokenizer.h"

#include <fstream>

#include "qtune/util/error.h"

namespace qtune::data {
namespace {

// transformers converts both kinds (MistralConverter, TikTokenConverter) when it loads the model's directory;
// saving the loaded tokenizer writes the tokenizer.json qtune reads.
constexpr const char* kConvert =
    "load the model's directory with transformers and save it (AutoTokenizer.from_pretrained(DIR)"
    ".save_pretrained(OUT)), which writes a tokenizer.json, and give qtune that file";

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// "<base64> <decimal>"
bool is_rank_line(const std::string& line) {
  size_t i = 0;
  while (i < line.size() && is_base64_char(line[i])) ++i;
  size_t pad = 0;
  while (i < line.size() && line[i] == '=' && pad < 2) ++i, ++pad;
  if (i == 0 || (i % 4) != 0 || i >= line.size() || line[i] != ' ') return false;
  size_t digits = 0;
  for (++i; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) ++digits;
  return digits > 0 && (i == line.size() || (line[i] == '\r' && i + 1 == line.size()));
}

}  // namespace

bool is_tekken_json(const nlohmann::json& j) {
  if (!j.is_object() || j.contains("model")) return false;
  const auto config = j.find("config"), vocab = j.find("vocab");
  return config != j.end() && config->is_object() && config->contains("pattern") && vocab != j.end() &&
         vocab->is_array() && (vocab->empty() || (vocab->front().is_object() && vocab->front().contains("token_bytes")));
}

bool is_tiktoken_text(const std::string& head) {
  size_t start = 0, lines = 0;
  while (lines < 3) {
    const size_t end = head.find('\n', start);
    if (end == std::string::npos) break;  // a last line cut by the read: not judged
    if (!is_rank_line(head.substr(start, end - start))) return false;
    ++lines;
    start = end + 1;
  }
  return lines > 0;
}

bool is_tiktoken_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(4096, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return is_tiktoken_text(head);
}

void fail_tekken(const std::string& source) {
  fail("{}: this is a Mistral Tekken tokenizer (mistral-common's tekken.json), not a Hugging Face tokenizer.json; "
       "qtune cannot read it: {}", source, kConvert);
}

void fail_tiktoken(const std::string& source) {
  fail("{}: this is a tiktoken rank file (base64 tokens and their ranks, as Qwen's qwen.tiktoken and Meta's original "
       "Llama 3 tokenizer.model are), not a SentencePiece model; it lacks the pre-tokenizer regex and special tokens, "
       "and qtune cannot read it: {}", source, kConvert);
}

}  // namespace qtune::data
