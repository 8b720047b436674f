// qtune's named chat templates against transformers' apply_chat_template on the Jinja templates models ship
// (the oracle_chat_templates fixture, tests/oracle/chat_templates.py: SmolLM2's ChatML, plain ChatML, Llama 3, and
// Llama 2 on a SentencePiece vocabulary): with data.chat_template auto, qtune finds the
// model's template, picks the named one that renders it, and gives the same ids for training conversations and
// generation prompts; only the replies are trained, each through its end-of-turn token, and BOS is never doubled.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/chat_template.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/tokenizer.h"
#include "qtune/util/strings.h"
#include "test_util.h"

namespace {

using namespace qtune::data;

nlohmann::json manifest() {
  const auto path = qtune::test::oracle_dir() + "/chat_templates/manifest.json";
  if (!std::filesystem::exists(path)) return nullptr;
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

Record record_of(const nlohmann::json& messages) {
  Record r;
  r.source = "oracle conversation";
  for (const auto& m : messages) r.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return r;
}

TEST(OracleChatTemplate, AutoPicksTheTemplateAndRendersTokenForTokenAsTransformers) {
  const auto m = manifest();
  if (m.is_null()) GTEST_FAIL() << "chat_templates/manifest.json missing: run through ctest (oracle_chat_templates)";
  if (m["cases"].empty()) GTEST_SKIP() << "SmolLM2 is absent: " << m.value("skipped", "");
  for (const auto& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto dir = c["dir"].get<std::string>();
    const auto tok = Tokenizer::load(dir);
    const auto format = resolve_chat_format("auto", dir, tok);
    // Llama 2 has no marker tokens: its replies end with the EOS id. The others render their markers as tokens.
    const std::string marker = end_of_turn_marker(format.kind);
    EXPECT_EQ(format.markers_are_tokens, !marker.empty());
    const int64_t end_of_turn = marker.empty() ? tok.eos_id() : tok.token_id(marker).value();
    for (const auto& conv : c["conversations"]) {
      const auto r = record_of(conv["messages"]);
      const auto s = tokenize_record(r, format, tok, /*train_on_prompt=*/false, 4096);
      EXPECT_EQ(s.input_ids, conv["ids"].get<std::vector<int64_t>>()) << conv["text"].get<std::string>();
      Record open = r;
      open.messages.pop_back();
      EXPECT_EQ(prompt_ids(open, format, tok), conv["prompt_ids"].get<std::vector<int64_t>>());
      // The trained tokens are the replies, each ending with the end-of-turn token.
      std::vector<std::vector<int64_t>> replies;
      for (size_t i = 0; i < s.labels.size(); ++i) {
        if (s.labels[i] == kIgnoreLabel) continue;
        if (i == 0 || s.labels[i - 1] == kIgnoreLabel) replies.emplace_back();
        replies.back().push_back(s.labels[i]);
      }
      std::vector<std::string> expected;
      for (const auto& msg : r.messages)
        if (msg.role == "assistant") expected.push_back(msg.content);
      ASSERT_EQ(replies.size(), expected.size());
      for (size_t k = 0; k < replies.size(); ++k) {
        EXPECT_EQ(replies[k].back(), end_of_turn);
        std::vector<int64_t> text(replies[k].begin(), replies[k].end() - 1);
        const auto got = tok.decode(text);
        EXPECT_TRUE(got == expected[k] || qtune::strip(got, " \t\r\n") == qtune::strip(expected[k], " \t\r\n")) << nlohmann::json(got).dump() << " vs " << nlohmann::json(expected[k]).dump();
      }
    }
  }
}

TEST(OracleChatTemplate, SmolLM2sGgufTemplateIsChatMLWithItsDefaultSystemPrompt) {
  QTUNE_REQUIRE_SMOLLM2();
  const auto t = find_model_chat_template(qtune::test::smollm2_gguf());
  ASSERT_TRUE(t.has_value());
  const auto f = match_chat_template(*t);
  EXPECT_EQ(f.kind, ChatTemplate::ChatML);
  EXPECT_EQ(f.default_system.value_or(""), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST(ChatTemplateMatch, AnUnknownTemplateNamesTheFileAndTheNamedTemplates) {
  const auto msg = qtune::test::error_of(
      [] { match_chat_template({"{% for m in messages %}{{ m['content'] }}{% endfor %}", "x/tokenizer_config.json"}); });
  EXPECT_NE(msg.find("x/tokenizer_config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama2, mistral, chatml, llama3, alpaca, none"), std::string::npos) << msg;
}

TEST(ChatTemplateMatch, AutoOnAModelWithoutATemplateSaysWhatToSet) {
  const auto dir = qtune::test::temp_dir();
  const auto msg = qtune::test::error_of([&] { resolve_chat_format("auto", dir, Tokenizer()); });
  EXPECT_NE(msg.find("has no chat template"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--template on the command line) to one of"), std::string::npos) << msg;
}

}  // namespace
