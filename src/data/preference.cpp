#include "qtune/data/preference.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "qtune/data/text_file.h"
#include "qtune/util/error.h"

namespace qtune::data {
namespace {

using json = nlohmann::json;

constexpr const char* kExpected =
    "preference records are {\"prompt\"?, \"chosen\", \"rejected\"}, each a string or a list of {\"role\", "
    "\"content\"} messages";

std::vector<Message> messages_of(const json& list, const std::string& at, const char* key) {
  std::vector<Message> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    const auto item = fmt::format("\"{}\"[{}]", key, i);
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
        !m["content"].is_string())
      fail("{}: {} must be a message {{\"role\": string, \"content\": string}} ({})", at, item, kExpected);
    const auto role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant")
      fail("{}: {} has unknown role '{}' (expected system, user or assistant)", at, item, role);
    out.push_back({role, m["content"].get<std::string>()});
  }
  return out;
}

bool same(const std::vector<Message>& a, size_t i, const std::vector<Message>& b) {
  return a[i].role == b[i].role && a[i].content == b[i].content;
}

PreferenceRecord parse_record(const std::string& at, const std::string& line) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error&) {
    fail("{}: not valid JSON; expected one JSON object per line ({})", at, kExpected);
  }
  if (!j.is_object()) fail("{}: expected a JSON object ({}), got {}", at, kExpected, j.type_name());
  for (const char* key : {"chosen", "rejected"})
    if (!j.contains(key)) fail("{}: missing \"{}\": a record with no completion ({})", at, key, kExpected);
  PreferenceRecord r;
  r.source = at;
  const bool has_prompt = j.contains("prompt");
  r.conversational = j["chosen"].is_array();
  for (const char* key : {"prompt", "chosen", "rejected"}) {
    if (!j.contains(key)) continue;
    const auto& v = j[key];
    if (r.conversational ? !v.is_array() : !v.is_string())
      fail("{}: \"{}\" is {} but \"chosen\" is {}: a record is all strings or all message lists ({})", at, key,
           v.type_name(), j["chosen"].type_name(), kExpected);
  }
  if (r.conversational) {
    r.chosen_messages = messages_of(j["chosen"], at, "chosen");
    r.rejected_messages = messages_of(j["rejected"], at, "rejected");
    if (has_prompt) {
      r.prompt_messages = messages_of(j["prompt"], at, "prompt");
    } else {  // TRL's extract_prompt: the longest common run of messages
      size_t i = 0;
      while (i < r.chosen_messages.size() && i < r.rejected_messages.size() &&
             same(r.chosen_messages, i, r.rejected_messages))
        ++i;
      r.prompt_messages.assign(r.chosen_messages.begin(), r.chosen_messages.begin() + i);
      r.chosen_messages.erase(r.chosen_messages.begin(), r.chosen_messages.begin() + i);
      r.rejected_messages.erase(r.rejected_messages.begin(), r.rejected_messages.begin() + i);
    }
    for (const auto* side : {&r.chosen_messages, &r.rejected_messages})
      if (side->empty())
        fail("{}: \"{}\" has no completion after the prompt", at, side == &r.chosen_messages ? "chosen" : "rejected");
    if (r.chosen_messages.size() == r.rejected_messages.size() &&
        std::equal(r.chosen_messages.begin(), r.chosen_messages.end(), r.rejected_messages.begin(),
                   [](const Message& a, const Message& b) { return a.role == b.role && a.content == b.content; }))
      fail("{}: \"chosen\" equals \"rejected\": a pair must prefer one answer over another", at);
    auto whole = r.prompt_messages;
    whole.insert(whole.end(), r.chosen_messages.begin(), r.chosen_messages.end());
    if (auto problem = conversation_problem(whole); !problem.empty())
      fail("{}: prompt + \"chosen\": {}", at, problem);
  } else {
    r.chosen = j["chosen"].get<std::string>();
    r.rejected = j["rejected"].get<std::string>();
    if (has_prompt) {
      r.prompt = j["prompt"].get<std::string>();
    } else {  // TRL's extract_prompt on strings: the common prefix of characters, less a space just before it ends
      size_t i = 0;
      const size_t n = std::min(r.chosen.size(), r.rejected.size());
      while (i < n && r.chosen[i] == r.rejected[i]) ++i;
      if (i < n && i > 0 && r.chosen[i - 1] == ' ') --i;
      r.prompt = r.chosen.substr(0, i);
      r.chosen.erase(0, i), r.rejected.erase(0, i);
    }
    if (r.chosen.empty()) fail("{}: \"chosen\" has no completion after the prompt", at);
    if (r.rejected.empty()) fail("{}: \"rejected\" has no completion after the prompt", at);
    if (r.chosen == r.rejected) fail("{}: \"chosen\" equals \"rejected\": a pair must prefer one answer over another", at);
  }
  return r;
}

size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

Record conversation(const PreferenceRecord& r, const std::vector<Message>* completion) {
  Record out;
  out.source = r.source;
  out.messages = r.prompt_messages;
  if (completion) out.messages.insert(out.messages.end(), completion->begin(), completion->end());
  return out;
}

}  // namespace

std::vector<PreferenceRecord> read_preference_records(const std::string& path) {
  const std::string text = read_text_file(path, "dataset");
  std::vector<PreferenceRecord> out;
  size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  for (int64_t number = 1; start < text.size(); ++number) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(parse_record(fmt::format("{}:{}", path, number), line));
  }
  if (out.empty()) fail("{}: no preference records ({})", path, kExpected);
  return out;
}

PreferencePair tokenize_preference(const PreferenceRecord& r, const ChatFormat& format, const Tokenizer& tok,
                                   const PreferenceLimits& limits) {
  std::vector<int64_t> prompt, with_chosen, with_rejected;
  if (r.conversational) {
    prompt = prompt_ids(conversation(r, nullptr), format, tok);
    const int64_t unlimited = std::numeric_limits<int32_t>::max();
    with_chosen = tokenize_record(conversation(r, &r.chosen_messages), format, tok, true, unlimited).input_ids;
    with_rejected = tokenize_record(conversation(r, &r.rejected_messages), format, tok, true, unlimited).input_ids;
  } else {
    // TRL appends the EOS token's text to each completion; as an id it is the same token.
    prompt = tok.encode(r.prompt);
    with_chosen = tok.encode(r.prompt + r.chosen);
    with_rejected = tok.encode(r.prompt + r.rejected);
    with_chosen.push_back(tok.eos_id());
    with_rejected.push_back(tok.eos_id());
  }
  const size_t shared = std::min(common_prefix(prompt, with_chosen), common_prefix(prompt, with_rejected));
  PreferencePair p;
  p.source = r.source;
  p.prompt.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(shared));
  p.chosen.assign(with_chosen.begin() + static_cast<std::ptrdiff_t>(shared), with_chosen.end());
  p.rejected.assign(with_rejected.begin() + static_cast<std::ptrdiff_t>(shared), with_rejected.end());
  if (p.chosen.empty() || p.rejected.empty())
    fail("{}: \"{}\" adds no token to the prompt", r.source, p.chosen.empty() ? "chosen" : "rejected");
  if (p.chosen == p.rejected)
    fail("{}: \"chosen\" and \"rejected\" tokenize the same: a pair must prefer one answer over another", r.source);
  if (limits.max_prompt_length > 0 && static_cast<int64_t>(p.prompt.size()) > limits.max_prompt_length)
    p.prompt.erase(p.prompt.begin(), p.prompt.end() - limits.max_prompt_length);
  if (limits.max_length > 0 && !limits.keep_end && static_cast<int64_t>(p.prompt.size()) >= limits.max_length)
    fail("{}: the prompt is {} tokens, at least data.max_seq_len {}: nothing of its completions would be trained "
         "(raise data.max_seq_len, set data.max_prompt_length, or data.truncation_mode: keep_end)",
         r.source, p.prompt.size(), limits.max_length);
  return p;
}

std::pair<TokenizedSample, TokenizedSample> preference_rows(const PreferencePair& pair, const PreferenceLimits& limits) {
  auto row = [&](const std::vector<int64_t>& completion) {
    TokenizedSample s;
    s.input_ids = pair.prompt;
    s.input_ids.insert(s.input_ids.end(), completion.begin(), completion.end());
    s.labels.assign(pair.prompt.size(), kIgnoreLabel);
    s.labels.insert(s.labels.end(), completion.begin(), completion.end());
    const auto n = static_cast<int64_t>(s.input_ids.size());
    if (limits.max_length > 0 && n > limits.max_length) {
      s.truncated = true;
      const auto cut = limits.keep_end ? n - limits.max_length : 0;
      s.input_ids = std::vector<int64_t>(s.input_ids.begin() + cut, s.input_ids.begin() + cut + limits.max_length);
      s.labels = std::vector<int64_t>(s.labels.begin() + cut, s.labels.begin() + cut + limits.max_length);
    }
    return s;
  };
  return {row(pair.chosen), row(pair.rejected)};
}

}  // namespace qtune::data
