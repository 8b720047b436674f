#pragma once
// Training records as read from a dataset file, before any template or tokenizer touches them: a conversation
// (alpaca-jsonl, chat-jsonl) or a plain document (text). Every record remembers the "file:line" it came from,
// so that later errors (tokenizing, templating) can point at the input.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qtune::data {

struct Message {
  std::string role;  // system | user | assistant | tool
  std::string content;
  // The message's other keys as written (tool_calls, tool_call_id, name, reasoning_content, ...), which the model's
  // own template may read; "content": null where the record had no content (an assistant turn that only calls
  // tools). Null: none.
  nlohmann::ordered_json extra;
  bool calls_tools() const;
};

// alpaca-jsonl's fields as written, kept beside the conversation: the alpaca template shows "input" under its
// own "### Input:" heading, which the merged user message (instruction + "\n\n" + input) cannot give back.
struct AlpacaFields {
  std::string instruction;
  std::string input;
};

struct Record {
  std::vector<Message> messages;  // empty for a text record
  std::string text;               // the document of a text record
  std::string source;             // "file:line" for errors
  std::optional<AlpacaFields> alpaca;
  nlohmann::ordered_json tools;            // TRL's per-record "tools" (function schemas); null: none
  nlohmann::ordered_json template_kwargs;  // TRL's per-record "chat_template_kwargs"; null: none
  bool is_text() const { return messages.empty(); }
  // Whether the record has tool calls, tool results or tools: only a model's own template renders those.
  bool uses_tools() const;
};

enum class DataFormat { AlpacaJsonl, ChatJsonl, Text };

DataFormat parse_data_format(const std::string& name);  // alpaca-jsonl | chat-jsonl | text
const char* data_format_name(DataFormat format);

// "" when `messages` is a conversation the chat templates can render: an optional system message first, then user
// and assistant turns alternating, starting with user and ending with assistant (or with user when `open_ended`,
// a prompt for generation); an assistant turn that calls tools is followed by one or more tool results and then the
// assistant again. Else what is wrong, naming the message by its 0-based index.
std::string conversation_problem(const std::vector<Message>& messages, bool open_ended = false);

// Reads every record of `path`; blank lines are skipped, anything else malformed is an error naming the file,
// the 1-based line and what was expected.
//  alpaca-jsonl: {"instruction", "input"?, "output", "system"?} (other keys ignored)
//      -> [system], user = instruction (+ "\n\n" + input when input is non-empty), assistant = output
//  chat-jsonl: {"messages": [{"role", "content"}, ...], "tools"?, "chat_template_kwargs"?} (TRL's conversational
//      format: messages may carry tool_calls and other keys, role "tool" gives a tool's result; "tools" is a list
//      of function schemas or its JSON text) or ShareGPT {"conversations": [{"from", "value"}, ...]} (from: human |
//      gpt | system, also user | assistant); an optional system message first, then user and assistant turns
//      alternating, starting with user and ending with assistant (the chat templates need that)
//  text: a .jsonl file of {"text": ...}; any other file is split into documents on lines "<|endoftext|>" when it
//      has one (TinyStories' format), else on blank lines. Documents are stripped; empty ones are dropped.
std::vector<Record> read_records(const std::string& path, DataFormat format);

}  // namespace qtune::data
