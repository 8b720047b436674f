#include "qtune/data/records.h"

#include <nlohmann/json.hpp>

#include "qtune/data/text_file.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::data {
namespace {

// Ordered: the keys of a tool call's arguments reach the template (its tojson) in the order the record wrote them.
using json = nlohmann::ordered_json;

constexpr const char* kEndOfText = "<|endoftext|>";

struct Line {
  std::string text;
  int64_t number;  // 1-based
};

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n\f\v") == std::string::npos; }

// All lines, blank ones included (text documents need them), without "\r\n" endings or a UTF-8 byte-order mark.
std::vector<Line> read_lines(const std::string& path) {
  std::string text = read_text_file(path, "dataset");
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
  std::vector<Line> lines;
  size_t start = 0;
  for (int64_t number = 1; start < text.size(); ++number) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back({std::move(line), number});
    start = end + 1;
  }
  return lines;
}

std::string where(const std::string& path, const Line& line) { return fmt::format("{}:{}", path, line.number); }

json parse_object(const std::string& at, const std::string& text, const char* expected) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann says "parse error at line 1, column N: ..." about the line alone; keep only the column onwards.
    std::string why = e.what();
    const auto column = why.find("column");
    if (column != std::string::npos) why = why.substr(column);
    fail("{}: not valid JSON ({}); expected one JSON object per line, {}", at, why, expected);
  }
  if (!j.is_object()) fail("{}: expected a JSON object ({}), got {}", at, expected, j.type_name());
  return j;
}

std::string get_string(const json& j, const char* key, const std::string& at, const char* expected) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing \"{}\" ({})", at, key, expected);
  if (!it->is_string()) fail("{}: \"{}\" must be a string, got {}", at, key, it->type_name());
  return it->get<std::string>();
}

std::string get_optional_string(const json& j, const char* key, const std::string& at) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (!it->is_string()) fail("{}: \"{}\" must be a string or null, got {}", at, key, it->type_name());
  return it->get<std::string>();
}

constexpr const char* kAlpacaExpected = "alpaca-jsonl records are {\"instruction\", \"input\"?, \"output\", \"system\"?}";

Record alpaca_record(const std::string& at, const std::string& line) {
  const json j = parse_object(at, line, kAlpacaExpected);
  Record r;
  r.source = at;
  const std::string instruction = get_string(j, "instruction", at, kAlpacaExpected);
  const std::string input = get_optional_string(j, "input", at);
  const std::string output = get_string(j, "output", at, kAlpacaExpected);
  const std::string system = get_optional_string(j, "system", at);
  if (!system.empty()) r.messages.push_back({"system", system});
  r.messages.push_back({"user", input.empty() ? instruction : instruction + "\n\n" + input});
  r.messages.push_back({"assistant", output});
  r.alpaca = AlpacaFields{instruction, input};
  return r;
}

constexpr const char* kChatExpected =
    "chat-jsonl records are {\"messages\": [{\"role\", \"content\"}, ...], \"tools\"?} or ShareGPT "
    "{\"conversations\": [{\"from\", \"value\"}, ...]}";

// TRL's conversational message: role and content, and whatever else it carries (tool_calls, tool_call_id, name,
// reasoning_content) for the model's own template. An assistant turn that calls tools may have no content.
Message chat_message(const json& m, const std::string& at) {
  const std::string role = get_string(m, "role", at, kChatExpected);
  if (role != "system" && role != "user" && role != "assistant" && role != "tool")
    fail("{} has unknown role '{}' (expected system, user, assistant or tool)", at, role);
  Message message{role, "", json()};
  for (const auto& [key, value] : m.items())
    if (key != "role" && key != "content") message.extra[key] = value;
  if (const auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) {
    if (role != "assistant") fail("{}: only an assistant message calls tools, this one is '{}'", at, role);
    if (!tc->is_array() || tc->empty()) fail("{}: \"tool_calls\" must be a non-empty list of calls", at);
    for (const auto& call : *tc)
      if (!call.is_object() || (!call.contains("function") && !call.contains("name")))
        fail("{}: each of \"tool_calls\" must be an object {{\"type\": \"function\", \"function\": {{\"name\", "
             "\"arguments\"}}}}, got {}", at, call.dump());
  }
  const auto content = m.find("content");
  if ((content == m.end() || content->is_null()) && message.calls_tools()) {
    message.extra["content"] = nullptr;
  } else {
    message.content = get_string(m, "content", at, kChatExpected);
  }
  return message;
}

Record chat_record(const std::string& at, const std::string& line) {
  const json j = parse_object(at, line, kChatExpected);
  const bool sharegpt = !j.contains("messages") && j.contains("conversations");
  const char* list = sharegpt ? "conversations" : "messages";
  auto it = j.find(list);
  if (it == j.end()) fail("{}: missing \"messages\" ({})", at, kChatExpected);
  if (!it->is_array()) fail("{}: \"{}\" must be a list, got {}", at, list, it->type_name());
  Record r;
  r.source = at;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string item = fmt::format("{}: {}[{}]", at, list, i);
    if (!sharegpt) {
      if (!m.is_object()) fail("{} must be an object {{\"role\", \"content\"}}, got {}", item, m.type_name());
      r.messages.push_back(chat_message(m, item));
      continue;
    }
    if (!m.is_object()) fail("{} must be an object {{\"from\", \"value\"}}, got {}", item, m.type_name());
    const std::string role = get_string(m, "from", item, kChatExpected);
    const std::string content = get_string(m, "value", item, kChatExpected);
    std::string mapped;
    if (role == "system" || role == "user" || role == "assistant") mapped = role;
    else if (role == "human") mapped = "user";
    else if (role == "gpt") mapped = "assistant";
    else fail("{} has unknown from '{}' (expected human, gpt or system)", item, role);
    r.messages.push_back({mapped, content, json()});
  }
  // TRL passes a record's "tools" (a list, or its JSON text) and "chat_template_kwargs" to apply_chat_template.
  if (auto tools = j.find("tools"); tools != j.end() && !tools->is_null()) {
    json parsed = *tools;
    if (tools->is_string()) {
      try {
        parsed = json::parse(tools->get<std::string>());
      } catch (const json::parse_error&) {
        fail("{}: \"tools\" is a string that is not JSON; expected a list of function schemas", at);
      }
    }
    if (!parsed.is_array()) fail("{}: \"tools\" must be a list of function schemas, got {}", at, parsed.type_name());
    if (!parsed.empty()) r.tools = parsed;  // [] is none, as TRL passes it (tools or None)
  }
  if (auto kw = j.find("chat_template_kwargs"); kw != j.end() && !kw->is_null()) {
    if (!kw->is_object()) fail("{}: \"chat_template_kwargs\" must be an object, got {}", at, kw->type_name());
    r.template_kwargs = *kw;
  }
  const std::string problem = conversation_problem(r.messages);
  if (!problem.empty()) fail("{}: \"{}\": {}", at, list, problem);
  return r;
}

Record json_text_record(const std::string& at, const std::string& line) {
  const char* expected = "text .jsonl records are {\"text\": \"...\"}";
  const json j = parse_object(at, line, expected);
  Record r;
  r.source = at;
  r.text = get_string(j, "text", at, expected);
  if (is_blank(r.text)) fail("{}: \"text\" is empty", at);
  return r;
}

// Plain text: documents end at a line "<|endoftext|>" when the file has one, else at blank lines.
std::vector<Record> text_documents(const std::string& path, const std::vector<Line>& lines) {
  bool has_marker = false;
  for (const auto& l : lines) has_marker = has_marker || strip(l.text) == kEndOfText;
  std::vector<Record> records;
  std::string doc;
  int64_t first_line = 0;
  auto flush = [&] {
    const std::string text = strip(doc);
    if (!text.empty()) records.push_back(Record{{}, text, fmt::format("{}:{}", path, first_line), std::nullopt});
    doc.clear();
    first_line = 0;
  };
  for (const auto& l : lines) {
    const bool boundary = has_marker ? strip(l.text) == kEndOfText : is_blank(l.text);
    if (boundary) {
      flush();
      continue;
    }
    if (first_line == 0 && !is_blank(l.text)) first_line = l.number;
    if (first_line != 0) doc += l.text + "\n";
  }
  flush();
  return records;
}

}  // namespace

bool Message::calls_tools() const {
  if (!extra.is_object()) return false;
  const auto it = extra.find("tool_calls");
  return it != extra.end() && it->is_array() && !it->empty();
}

bool Record::uses_tools() const {
  if (!tools.is_null()) return true;
  for (const auto& m : messages)
    if (m.role == "tool" || m.calls_tools()) return true;
  return false;
}

std::string conversation_problem(const std::vector<Message>& messages, bool open_ended) {
  if (messages.empty()) return "no messages; expected at least a user and an assistant message";
  const size_t first = messages[0].role == "system" ? 1 : 0;
  // What may follow each message: user → assistant; assistant → user, or tool results when it calls tools;
  // tool → tool or assistant.
  std::string expected = "user";
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      return fmt::format("message {} has unknown role '{}' (expected system, user, assistant or tool)", i, role);
    if (i < first) continue;
    if (role == "system") return fmt::format("message {} is a system message; only the first message may be one", i);
    const bool fits = expected == role || (expected == "tool or assistant" && (role == "tool" || role == "assistant"));
    if (!fits) {
      if (expected == "tool")
        return fmt::format("message {} is '{}' where 'tool' was expected: message {} calls tools, so their results "
                           "come next",
                           i, role, i - 1);
      return fmt::format("message {} is '{}' where '{}' was expected: user and assistant turns alternate, "
                         "starting with user",
                         i, role, expected);
    }
    if (role == "user") expected = "assistant";
    else if (role == "tool") expected = "tool or assistant";
    else expected = messages[i].calls_tools() ? "tool" : "user";
  }
  if (messages.size() == first) return "only a system message; expected user and assistant turns after it";
  if (!open_ended && (messages.back().role != "assistant" || messages.back().calls_tools()))
    return fmt::format("the last message is '{}'{}; a training conversation ends with an assistant reply",
                       messages.back().role, messages.back().calls_tools() ? " calling tools" : "");
  return "";
}

DataFormat parse_data_format(const std::string& name) {
  if (name == "alpaca-jsonl") return DataFormat::AlpacaJsonl;
  if (name == "chat-jsonl") return DataFormat::ChatJsonl;
  if (name == "text") return DataFormat::Text;
  fail("unknown data format '{}' (expected alpaca-jsonl, chat-jsonl or text)", name);
}

const char* data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::AlpacaJsonl: return "alpaca-jsonl";
    case DataFormat::ChatJsonl: return "chat-jsonl";
    case DataFormat::Text: return "text";
  }
  return "?";
}

std::vector<Record> read_records(const std::string& path, DataFormat format) {
  const auto lines = read_lines(path);
  std::vector<Record> records;
  if (format == DataFormat::Text && !ends_with(path, ".jsonl")) {
    records = text_documents(path, lines);
  } else {
    for (const auto& line : lines) {
      if (is_blank(line.text)) continue;
      const std::string at = where(path, line);
      switch (format) {
        case DataFormat::AlpacaJsonl: records.push_back(alpaca_record(at, line.text)); break;
        case DataFormat::ChatJsonl: records.push_back(chat_record(at, line.text)); break;
        case DataFormat::Text: records.push_back(json_text_record(at, line.text)); break;
      }
    }
  }
  if (records.empty())
    fail("{}: no {} records: the file is {}", path, data_format_name(format), lines.empty() ? "empty" : "blank");
  return records;
}

}  // namespace qtune::data
