#pragma once
// Training records as read from a dataset file, before any template or tokenizer touches them: a conversation
// (alpaca-jsonl, chat-jsonl) or a plain document (text). Every record remembers the "file:line" it came from,
// so that later errors (tokenizing, templating) can point at the input.
#include <optional>
#include <string>
#include <vector>

namespace qtune::data {

struct Message {
  std::string role;  // system | user | assistant
  std::string content;
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
  bool is_text() const { return messages.empty(); }
};

enum class DataFormat { AlpacaJsonl, ChatJsonl, Text };

DataFormat parse_data_format(const std::string& name);  // alpaca-jsonl | chat-jsonl | text
const char* data_format_name(DataFormat format);

// "" when `messages` is a conversation the chat templates can render: an optional system message first, then user
// and assistant turns alternating, starting with user and ending with assistant (or with user when `open_ended`,
// a prompt for generation); else what is wrong, naming the message by its 0-based index.
std::string conversation_problem(const std::vector<Message>& messages, bool open_ended = false);

// Reads every record of `path`; blank lines are skipped, anything else malformed is an error naming the file,
// the 1-based line and what was expected.
//  alpaca-jsonl: {"instruction", "input"?, "output", "system"?} (other keys ignored)
//      -> [system], user = instruction (+ "\n\n" + input when input is non-empty), assistant = output
//  chat-jsonl: {"messages": [{"role", "content"}, ...]} or ShareGPT {"conversations": [{"from", "value"}, ...]}
//      (from: human | gpt | system, also user | assistant); an optional system message first, then user and
//      assistant turns alternating, starting with user and ending with assistant (the chat templates need that)
//  text: a .jsonl file of {"text": ...}; any other file is split into documents on lines "<|endoftext|>" when it
//      has one (TinyStories' format), else on blank lines. Documents are stripped; empty ones are dropped.
std::vector<Record> read_records(const std::string& path, DataFormat format);

}  // namespace qtune::data
