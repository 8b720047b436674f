#include "qtune/data/records.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

namespace {

using namespace qtune::data;
using qtune::test::error_of;

std::string write_file(const std::string& dir, const std::string& name, const std::string& content) {
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

// The error of reading `content` as `format` must name the file and line and contain each of `expected`.
void expect_error(const std::string& content, DataFormat format, int line, std::vector<std::string> expected,
                  const std::string& name = "data.jsonl") {
  const auto path = write_file(qtune::test::temp_dir(), name, content);
  const auto msg = error_of([&] { read_records(path, format); });
  const std::string at = line > 0 ? path + ":" + std::to_string(line) + ":" : path + ":";
  EXPECT_NE(msg.find(at), std::string::npos) << "expected '" << at << "' in: " << msg;
  for (const auto& e : expected) EXPECT_NE(msg.find(e), std::string::npos) << "expected '" << e << "' in: " << msg;
}

TEST(Records, ParsesFormatNames) {
  EXPECT_EQ(parse_data_format("alpaca-jsonl"), DataFormat::AlpacaJsonl);
  EXPECT_EQ(parse_data_format("chat-jsonl"), DataFormat::ChatJsonl);
  EXPECT_EQ(parse_data_format("text"), DataFormat::Text);
  const auto msg = error_of([] { parse_data_format("jsonl"); });
  for (const char* name : {"'jsonl'", "alpaca-jsonl", "chat-jsonl", "text"})
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
}

TEST(Records, ReadsTheDollyAlpacaFile) {
  QTUNE_REQUIRE_SHARED();
  const auto path = qtune::test::shared_dir() + "/data/dolly_tiny_train.jsonl";
  const auto records = read_records(path, DataFormat::AlpacaJsonl);
  ASSERT_EQ(records.size(), 35u);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    ASSERT_EQ(r.messages.size(), 2u) << r.source;
    EXPECT_EQ(r.messages[0].role, "user");
    EXPECT_EQ(r.messages[1].role, "assistant");
    EXPECT_FALSE(r.messages[1].content.empty()) << r.source;
    EXPECT_EQ(r.source, path + ":" + std::to_string(i + 1));
    ASSERT_TRUE(r.alpaca.has_value());
    const std::string& input = r.alpaca->input;
    EXPECT_EQ(r.messages[0].content, input.empty() ? r.alpaca->instruction : r.alpaca->instruction + "\n\n" + input);
  }
  // Line 1 has a context (Dolly's "context" is alpaca's "input"); line 2 has none.
  EXPECT_EQ(records[0].alpaca->instruction, "When did Virgin Australia start operating?");
  EXPECT_EQ(records[0].messages[0].content.rfind("When did Virgin Australia start operating?\n\nVirgin Australia, ", 0),
            0u);
  EXPECT_EQ(records[1].messages[0].content, "Which is a species of fish? Tope or Rope");
  EXPECT_EQ(records[1].messages[1].content, "Tope");
}

TEST(Records, AlpacaSystemNullInputAndBlankLines) {
  const auto path = write_file(qtune::test::temp_dir(), "a.jsonl",
                               "\n"
                               "{\"instruction\": \"Add\", \"input\": \"2 and 3\", \"output\": \"5\", \"system\": \"Be brief.\"}\r\n"
                               "   \n"
                               "{\"instruction\": \"Say hi\", \"input\": null, \"output\": \"hi\", \"extra\": [1]}\n");
  const auto records = read_records(path, DataFormat::AlpacaJsonl);
  ASSERT_EQ(records.size(), 2u);
  ASSERT_EQ(records[0].messages.size(), 3u);
  EXPECT_EQ(records[0].messages[0].role, "system");
  EXPECT_EQ(records[0].messages[0].content, "Be brief.");
  EXPECT_EQ(records[0].messages[1].content, "Add\n\n2 and 3");
  EXPECT_EQ(records[0].messages[2].content, "5") << "the \\r of a CRLF line is not part of the record";
  EXPECT_EQ(records[0].source, path + ":2");
  ASSERT_EQ(records[1].messages.size(), 2u);
  EXPECT_EQ(records[1].messages[0].content, "Say hi");
  EXPECT_EQ(records[1].source, path + ":4") << "line numbers count the skipped blank lines";
}

TEST(Records, ChatMessagesAndShareGpt) {
  const auto path = write_file(
      qtune::test::temp_dir(), "c.jsonl",
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]})"
      "\n"
      R"({"conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi there"}]})"
      "\n");
  const auto records = read_records(path, DataFormat::ChatJsonl);
  ASSERT_EQ(records.size(), 2u);
  const std::vector<std::pair<std::string, std::string>> first = {
      {"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}, {"assistant", "A2"}};
  ASSERT_EQ(records[0].messages.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(records[0].messages[i].role, first[i].first);
    EXPECT_EQ(records[0].messages[i].content, first[i].second);
  }
  ASSERT_EQ(records[1].messages.size(), 2u);
  EXPECT_EQ(records[1].messages[0].role, "user");
  EXPECT_EQ(records[1].messages[0].content, "hello");
  EXPECT_EQ(records[1].messages[1].role, "assistant");
  EXPECT_EQ(records[1].messages[1].content, "hi there");
  EXPECT_FALSE(records[1].alpaca.has_value());
}

TEST(Records, TextJsonlAndPlainDocuments) {
  const auto dir = qtune::test::temp_dir();
  auto jsonl = read_records(write_file(dir, "t.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"two\\nlines\"}\n"),
                            DataFormat::Text);
  ASSERT_EQ(jsonl.size(), 2u);
  EXPECT_TRUE(jsonl[0].is_text());
  EXPECT_EQ(jsonl[1].text, "two\nlines");

  // Blank lines separate documents when there is no <|endoftext|> line.
  const auto para = write_file(dir, "p.txt", "First doc\nline two\n\n  \nSecond doc\n\n\n");
  auto docs = read_records(para, DataFormat::Text);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "First doc\nline two");
  EXPECT_EQ(docs[1].text, "Second doc");
  EXPECT_EQ(docs[1].source, para + ":5");

  // With <|endoftext|> lines, blank lines stay inside a document.
  const auto stories = write_file(dir, "s.txt", "Story one.\n\nStill one.\n<|endoftext|>\nStory two.\n<|endoftext|>\n");
  docs = read_records(stories, DataFormat::Text);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "Story one.\n\nStill one.");
  EXPECT_EQ(docs[1].text, "Story two.");
  EXPECT_EQ(docs[1].source, stories + ":5");
}

TEST(Records, TinyStoriesFileSplitsIntoItsStories) {
  QTUNE_REQUIRE_SHARED();
  const auto docs = read_records(qtune::test::shared_dir() + "/data/tinystories_valid_head.txt", DataFormat::Text);
  ASSERT_EQ(docs.size(), 22u) << "the README says the file holds the first 22 stories";
  for (const auto& d : docs) EXPECT_EQ(d.text.find("<|endoftext|>"), std::string::npos);
}

TEST(Records, ErrorsNameFileLineAndWhatWasExpected) {
  const std::string ok = "{\"instruction\": \"i\", \"output\": \"o\"}\n";
  expect_error(ok + "{\"instruction\": \"i\", \"output\": \"o\"\n", DataFormat::AlpacaJsonl, 2,
               {"not valid JSON", "one JSON object per line"});
  expect_error(ok + ok + "{\"instruction\": \"i\"}\n", DataFormat::AlpacaJsonl, 3, {"missing \"output\""});
  expect_error("\n{\"instruction\": \"i\", \"output\": 3}\n", DataFormat::AlpacaJsonl, 2,
               {"\"output\" must be a string", "number"});
  expect_error("{\"instruction\": \"i\", \"output\": \"o\", \"input\": [\"x\"]}\n", DataFormat::AlpacaJsonl, 1,
               {"\"input\" must be a string or null", "array"});
  expect_error("[1, 2]\n", DataFormat::AlpacaJsonl, 1, {"expected a JSON object", "array"});
  const std::string chat_ok = R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})";
  expect_error(chat_ok + "\n" + R"({"messages": [{"role": "user", "content": "u"}, {"role": "bot", "content": "a"}]})",
               DataFormat::ChatJsonl, 2, {"unknown role 'bot'", "system, user, assistant or tool"});
  expect_error(R"({"conversations": [{"from": "human", "value": "u"}, {"from": "model", "value": "a"}]})",
               DataFormat::ChatJsonl, 1, {"unknown from 'model'", "human, gpt or system"});
  expect_error(R"({"messages": [{"role": "user", "content": "u"}]})", DataFormat::ChatJsonl, 1,
               {"last message is 'user'", "ends with an assistant reply"});
  expect_error(R"({"messages": [{"role": "user", "content": "u"}, {"role": "user", "content": "v"}, {"role": "assistant", "content": "a"}]})",
               DataFormat::ChatJsonl, 1, {"message 1 is 'user' where 'assistant' was expected"});
  expect_error(R"({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]})",
               DataFormat::ChatJsonl, 1, {"messages[0]", "\"content\" must be a string"});
  expect_error(R"({"messages": []})", DataFormat::ChatJsonl, 1, {"no messages"});
  expect_error(R"({"prompt": "x"})", DataFormat::ChatJsonl, 1, {"missing \"messages\"", "conversations"});
  expect_error("{\"content\": \"x\"}\n", DataFormat::Text, 1, {"missing \"text\""});
  expect_error("", DataFormat::AlpacaJsonl, 0, {"no alpaca-jsonl records", "empty"});
  expect_error("\n  \n\n", DataFormat::ChatJsonl, 0, {"no chat-jsonl records", "blank"});
  expect_error("\n\n<|endoftext|>\n", DataFormat::Text, 0, {"no text records"}, "empty.txt");
  const auto missing = qtune::test::temp_dir() + "/absent.jsonl";
  const auto msg = error_of([&] { read_records(missing, DataFormat::AlpacaJsonl); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot read"), std::string::npos) << msg;
}

TEST(Records, ConversationProblems) {
  EXPECT_EQ(conversation_problem({{"user", "u"}, {"assistant", "a"}}), "");
  EXPECT_EQ(conversation_problem({{"system", "s"}, {"user", "u"}}, /*open_ended=*/true), "");
  EXPECT_NE(conversation_problem({{"system", "s"}, {"user", "u"}}), "");
  EXPECT_NE(conversation_problem({{"system", "s"}}, true).find("only a system message"), std::string::npos);
  EXPECT_NE(conversation_problem({{"user", "u"}, {"system", "s"}, {"assistant", "a"}}).find("only the first"),
            std::string::npos);
  EXPECT_NE(conversation_problem({{"assistant", "a"}}).find("'user' was expected"), std::string::npos);
}

// TRL's conversational tool format: an assistant turn that calls tools (content absent), the tools' results, the
// answer, and the record's tools; every other key of a message is kept, in order, for the model's own template.
TEST(Records, ToolCallsToolResultsAndToolsAreKeptForTheModelsTemplate) {
  const std::string line =
      R"({"messages": [{"role": "user", "content": "Weather in Paris?"},)"
      R"( {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}]},)"
      R"( {"role": "tool", "name": "get_weather", "tool_call_id": "c1", "content": "22"},)"
      R"( {"role": "assistant", "content": "22 °C.", "reasoning_content": "Read it."}],)"
      R"( "tools": "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}]", "chat_template_kwargs": {"enable_thinking": false}})";
  const auto records = read_records(write_file(qtune::test::temp_dir(), "tools.jsonl", line + "\n"), DataFormat::ChatJsonl);
  ASSERT_EQ(records.size(), 1u);
  const auto& r = records[0];
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_TRUE(r.messages[1].calls_tools());
  EXPECT_TRUE(r.messages[1].extra["content"].is_null());  // absent content stays absent for the template
  EXPECT_EQ(r.messages[1].extra["tool_calls"][0]["function"]["arguments"].dump(), R"({"unit":"c","city":"Paris"})");
  EXPECT_EQ(r.messages[2].role, "tool");
  EXPECT_EQ(r.messages[2].content, "22");
  EXPECT_EQ(r.messages[2].extra["tool_call_id"], "c1");
  EXPECT_EQ(r.messages[3].extra["reasoning_content"], "Read it.");
  ASSERT_TRUE(r.tools.is_array());  // TRL's JSON-text tools, parsed
  EXPECT_EQ(r.tools[0]["function"]["name"], "get_weather");
  EXPECT_EQ(r.template_kwargs["enable_thinking"], false);
  EXPECT_TRUE(r.uses_tools());

  const std::string user = R"({"role": "user", "content": "u"})", answer = R"({"role": "assistant", "content": "a"})";
  const std::string call = R"({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]})";
  const std::string result = R"({"role": "tool", "content": "r"})";
  auto chat = [](const std::vector<std::string>& ms, const std::string& more = "") {
    std::string s = "{\"messages\": [";
    for (size_t i = 0; i < ms.size(); ++i) s += (i ? ", " : "") + ms[i];
    return s + "]" + more + "}";
  };
  // Two results for one call, then the answer: fine.
  EXPECT_EQ(read_records(write_file(qtune::test::temp_dir(), "two.jsonl", chat({user, call, result, result, answer})),
                         DataFormat::ChatJsonl).size(), 1u);
  expect_error(chat({user, call, answer}), DataFormat::ChatJsonl, 1,
               {"message 2 is 'assistant' where 'tool' was expected", "message 1 calls tools"});
  expect_error(chat({user, call}), DataFormat::ChatJsonl, 1, {"the last message is 'assistant' calling tools"});
  expect_error(chat({user, result, answer}), DataFormat::ChatJsonl, 1, {"message 1 is 'tool' where 'assistant'"});
  expect_error(chat({R"({"role": "user", "content": "u", "tool_calls": [{"function": {"name": "f"}}]})", answer}),
               DataFormat::ChatJsonl, 1, {"messages[0]", "only an assistant message calls tools"});
  expect_error(chat({user, R"({"role": "assistant", "tool_calls": []})", result, answer}), DataFormat::ChatJsonl, 1,
               {"messages[1]", "\"tool_calls\" must be a non-empty list"});
  expect_error(chat({user, answer}, R"(, "tools": {"name": "f"})"), DataFormat::ChatJsonl, 1,
               {"\"tools\" must be a list of function schemas", "object"});
  expect_error(chat({user, answer}, R"(, "tools": "[oops")"), DataFormat::ChatJsonl, 1, {"\"tools\" is a string that is not JSON"});
  EXPECT_FALSE(read_records(write_file(qtune::test::temp_dir(), "empty.jsonl", chat({user, answer}, R"(, "tools": [])")),
                            DataFormat::ChatJsonl)[0].uses_tools());  // [] is no tools, as TRL passes it
}

}  // namespace
