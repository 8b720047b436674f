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
  if (!j.contains("chosen") && j.contains("completion") && j.contains("label"))
    fail("{}: a KTO record (\"prompt\", \"completion\", \"label\"), not a pair: set train.objective: kto, or give "
         "pairs ({})",
         at, kExpected);
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

Record conversation(const std::string& source, const std::vector<Message>& prompt,
                    const std::vector<Message>* completion) {
  Record out;
  out.source = source;
  out.messages = prompt;
  if (completion) out.messages.insert(out.messages.end(), completion->begin(), completion->end());
  return out;
}

// The prompt's ids and prompt + completion's, as TRL tokenizes them: a conversation through the chat template (the
// prompt with the assistant's header), plain text as prompt + completion + EOS (TRL appends the EOS token's text;
// as an id it is the same token).
std::vector<int64_t> prompt_tokens(bool conversational, const std::string& source, const std::string& prompt,
                                   const std::vector<Message>& prompt_messages, const ChatFormat& format,
                                   const Tokenizer& tok) {
  return conversational ? prompt_ids(conversation(source, prompt_messages, nullptr), format, tok) : tok.encode(prompt);
}

std::vector<int64_t> whole_tokens(bool conversational, const std::string& source, const std::string& prompt,
                                  const std::vector<Message>& prompt_messages, const std::string& completion,
                                  const std::vector<Message>& completion_messages, const ChatFormat& format,
                                  const Tokenizer& tok) {
  if (conversational) {
    const int64_t unlimited = std::numeric_limits<int32_t>::max();
    return tokenize_record(conversation(source, prompt_messages, &completion_messages), format, tok, true, unlimited)
        .input_ids;
  }
  auto ids = tok.encode(prompt + completion);
  ids.push_back(tok.eos_id());
  return ids;
}

// A prompt cut to data.max_prompt_length (its end kept), and the error when it alone fills max_length.
void limit_prompt(std::vector<int64_t>& prompt, const PreferenceLimits& limits, const std::string& source) {
  if (limits.max_prompt_length > 0 && static_cast<int64_t>(prompt.size()) > limits.max_prompt_length)
    prompt.erase(prompt.begin(), prompt.end() - limits.max_prompt_length);
  if (limits.max_length > 0 && !limits.keep_end && static_cast<int64_t>(prompt.size()) >= limits.max_length)
    fail("{}: the prompt is {} tokens, at least data.max_seq_len {}: nothing of its completions would be trained "
         "(raise data.max_seq_len, set data.max_prompt_length, or data.truncation_mode: keep_end)",
         source, prompt.size(), limits.max_length);
}

// prompt + completion cut to max_length, labels -100 on the prompt.
TokenizedSample completion_row(const std::vector<int64_t>& prompt, const std::vector<int64_t>& completion,
                               int64_t max_length, bool keep_end) {
  TokenizedSample s;
  s.input_ids = prompt;
  s.input_ids.insert(s.input_ids.end(), completion.begin(), completion.end());
  s.labels.assign(prompt.size(), kIgnoreLabel);
  s.labels.insert(s.labels.end(), completion.begin(), completion.end());
  const auto n = static_cast<int64_t>(s.input_ids.size());
  if (max_length > 0 && n > max_length) {
    s.truncated = true;
    const auto cut = keep_end ? n - max_length : 0;
    s.input_ids = std::vector<int64_t>(s.input_ids.begin() + cut, s.input_ids.begin() + cut + max_length);
    s.labels = std::vector<int64_t>(s.labels.begin() + cut, s.labels.begin() + cut + max_length);
  }
  return s;
}

constexpr const char* kKtoExpected =
    "KTO records are {\"prompt\", \"completion\", \"label\": true|false}, prompt and completion each a string or "
    "a list of {\"role\", \"content\"} messages";

KtoRecord parse_kto_record(const std::string& at, const std::string& line) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error&) {
    fail("{}: not valid JSON; expected one JSON object per line ({})", at, kKtoExpected);
  }
  if (!j.is_object()) fail("{}: expected a JSON object ({}), got {}", at, kKtoExpected, j.type_name());
  if (j.contains("chosen") || j.contains("rejected"))
    fail("{}: a preference pair (\"chosen\", \"rejected\") in a file of KTO records (its first record is one): a "
         "file is all pairs (unpaired for KTO) or all {}",
         at, kKtoExpected);
  if (!j.contains("completion")) fail("{}: missing \"completion\": a record with no completion ({})", at, kKtoExpected);
  if (!j.contains("prompt")) fail("{}: missing \"prompt\" ({})", at, kKtoExpected);
  if (!j.contains("label") || !j["label"].is_boolean())
    fail("{}: \"label\" must be true (a desirable completion) or false (an undesirable one), got {} ({})", at,
         j.contains("label") ? j["label"].dump() : "none", kKtoExpected);
  KtoRecord r;
  r.source = at;
  r.desirable = j["label"].get<bool>();
  r.conversational = j["completion"].is_array();
  for (const char* key : {"prompt", "completion"}) {
    const auto& v = j[key];
    if (r.conversational ? !v.is_array() : !v.is_string())
      fail("{}: \"{}\" is {} but \"completion\" is {}: a record is all strings or all message lists ({})", at, key,
           v.type_name(), j["completion"].type_name(), kKtoExpected);
  }
  if (r.conversational) {
    r.prompt_messages = messages_of(j["prompt"], at, "prompt");
    r.completion_messages = messages_of(j["completion"], at, "completion");
    if (r.completion_messages.empty()) fail("{}: \"completion\" is empty: a record with no completion", at);
    auto whole = r.prompt_messages;
    whole.insert(whole.end(), r.completion_messages.begin(), r.completion_messages.end());
    if (auto problem = conversation_problem(whole); !problem.empty())
      fail("{}: prompt + \"completion\": {}", at, problem);
  } else {
    r.prompt = j["prompt"].get<std::string>();
    r.completion = j["completion"].get<std::string>();
    if (r.completion.empty()) fail("{}: \"completion\" is empty: a record with no completion", at);
  }
  return r;
}

// Each non-blank line of a .jsonl file through `parse`, with "file:line".
template <typename Parse>
auto read_jsonl(const std::string& path, const char* expected, Parse parse) {
  const std::string text = read_text_file(path, "dataset");
  std::vector<decltype(parse(std::string(), std::string()))> out;
  size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  for (int64_t number = 1; start < text.size(); ++number) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(parse(fmt::format("{}:{}", path, number), line));
  }
  if (out.empty()) fail("{}: no records ({})", path, expected);
  return out;
}

}  // namespace

std::vector<PreferenceRecord> read_preference_records(const std::string& path) {
  return read_jsonl(path, kExpected, parse_record);
}

PreferencePair tokenize_preference(const PreferenceRecord& r, const ChatFormat& format, const Tokenizer& tok,
                                   const PreferenceLimits& limits) {
  const auto prompt = prompt_tokens(r.conversational, r.source, r.prompt, r.prompt_messages, format, tok);
  const auto with_chosen = whole_tokens(r.conversational, r.source, r.prompt, r.prompt_messages, r.chosen,
                                        r.chosen_messages, format, tok);
  const auto with_rejected = whole_tokens(r.conversational, r.source, r.prompt, r.prompt_messages, r.rejected,
                                          r.rejected_messages, format, tok);
  // The shared prompt is where the prompt's tokens and both prompt + completion's stop agreeing.
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
  limit_prompt(p.prompt, limits, r.source);
  return p;
}

std::vector<KtoRecord> read_kto_records(const std::string& path) {
  // As TRL's KTOTrainer, the first record says which: a file of pairs is unpaired.
  const auto first = read_jsonl(path, kKtoExpected, [](const std::string&, const std::string& line) {
    const auto j = json::parse(line, nullptr, false);
    return j.is_object() && j.contains("chosen");
  });
  auto records =
      first.front() ? unpair(read_preference_records(path)) : read_jsonl(path, kKtoExpected, parse_kto_record);
  const auto desirable = std::count_if(records.begin(), records.end(), [](const KtoRecord& r) { return r.desirable; });
  if (desirable == 0 || desirable == static_cast<std::ptrdiff_t>(records.size()))
    fail("{}: every one of its {} KTO records has \"label\": {}; KTO weighs desirable completions against undesirable "
         "ones and needs both (TRL's KTOTrainer too)",
         path, records.size(), desirable == 0 ? "false" : "true");
  return records;
}

std::vector<KtoRecord> unpair(const std::vector<PreferenceRecord>& pairs) {
  // TRL's unpair_preference_dataset is a batched datasets.map (1000 rows a batch): each batch's chosen, then its
  // rejected.
  constexpr size_t kMapBatch = 1000;
  std::vector<KtoRecord> out;
  for (size_t start = 0; start < pairs.size(); start += kMapBatch) {
    const size_t end = std::min(pairs.size(), start + kMapBatch);
    for (const bool desirable : {true, false})
      for (size_t i = start; i < end; ++i) {
        const auto& p = pairs[i];
        KtoRecord r;
        r.conversational = p.conversational;
        r.desirable = desirable;
        r.prompt = p.prompt;
        r.prompt_messages = p.prompt_messages;
        r.completion = desirable ? p.chosen : p.rejected;
        r.completion_messages = desirable ? p.chosen_messages : p.rejected_messages;
        r.source = p.source;
        out.push_back(std::move(r));
      }
  }
  return out;
}

KtoExample tokenize_kto(const KtoRecord& r, const ChatFormat& format, const Tokenizer& tok,
                        const PreferenceLimits& limits) {
  const auto prompt = prompt_tokens(r.conversational, r.source, r.prompt, r.prompt_messages, format, tok);
  const auto whole = whole_tokens(r.conversational, r.source, r.prompt, r.prompt_messages, r.completion,
                                  r.completion_messages, format, tok);
  // As TRL's KTOTrainer: the completion starts where the prompt's tokens and prompt + completion's diverge.
  const auto shared = static_cast<std::ptrdiff_t>(common_prefix(prompt, whole));
  KtoExample e;
  e.source = r.source;
  e.desirable = r.desirable;
  e.prompt.assign(prompt.begin(), prompt.begin() + shared);
  e.completion.assign(whole.begin() + shared, whole.end());
  if (e.completion.empty()) fail("{}: \"completion\" adds no token to the prompt", r.source);
  limit_prompt(e.prompt, limits, r.source);
  return e;
}

TokenizedSample kto_row(const KtoExample& e, const PreferenceLimits& limits) {
  auto s = completion_row(e.prompt, e.completion, limits.max_length, limits.keep_end);
  s.desirable = e.desirable ? 1 : 0;
  return s;
}

std::vector<TokenizedSample> mismatched_rows(const std::vector<const TokenizedSample*>& rows, int64_t max_length) {
  auto prompt_length = [](const TokenizedSample& s) {
    size_t p = 0;
    while (p < s.labels.size() && s.labels[p] == kIgnoreLabel) ++p;
    return static_cast<std::ptrdiff_t>(p);
  };
  std::vector<TokenizedSample> out;
  const size_t n = rows.size();
  for (size_t i = 0; i < n; ++i) {
    const auto& own = *rows[i];
    const auto& other = *rows[(i + n - 1) % n];
    const std::vector<int64_t> prompt(own.input_ids.begin(), own.input_ids.begin() + prompt_length(own));
    const std::vector<int64_t> completion(other.input_ids.begin() + prompt_length(other), other.input_ids.end());
    out.push_back(completion_row(prompt, completion, max_length, false));
  }
  return out;
}

std::pair<TokenizedSample, TokenizedSample> preference_rows(const PreferencePair& pair, const PreferenceLimits& limits) {
  return {completion_row(pair.prompt, pair.chosen, limits.max_length, limits.keep_end),
          completion_row(pair.prompt, pair.rejected, limits.max_length, limits.keep_end)};
}

}  // namespace qtune::data
