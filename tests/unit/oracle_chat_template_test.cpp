// qtune's named chat templates against transformers' apply_chat_template on the Jinja templates models ship
// (the oracle_chat_templates fixture, tests/oracle/chat_templates.py: SmolLM2's ChatML, plain ChatML, Llama 3, and
// Llama 2 on a SentencePiece vocabulary; Qwen2.5, Qwen3, Gemma 1/2/3, Phi-3/3.5 and Phi-4 on tiny tokenizers with
// their markers): with data.chat_template auto, qtune finds the model's template, picks the named one that renders
// it, and gives the same ids for training conversations and generation prompts; only the replies are trained, each
// through its end-of-turn token (for the newer families: exactly the tokens of transformers' assistant mask), and BOS
// is never doubled.
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

// Labels as tokenize_record gives them, as a 0/1 mask of the trained positions.
std::vector<int64_t> trained_mask(const TokenizedSample& s) {
  std::vector<int64_t> mask;
  for (auto l : s.labels) mask.push_back(l != kIgnoreLabel);
  return mask;
}

TEST(OracleChatTemplate, NewerFamiliesRenderTokenForTokenAndTrainTransformersAssistantMask) {
  const auto m = manifest();
  if (m.is_null()) GTEST_FAIL() << "chat_templates/manifest.json missing: run through ctest (oracle_chat_templates)";
  ASSERT_TRUE(m.contains("families"));
  ASSERT_FALSE(m["families"].empty());
  for (const auto& c : m["families"]) {
    const auto name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const auto dir = c["dir"].get<std::string>();
    const auto tok = Tokenizer::load(dir);
    const auto named = c["named"].get<std::string>();
    std::vector<std::pair<std::string, ChatFormat>> formats = {{"auto", resolve_chat_format("auto", dir, tok)}};
    EXPECT_STREQ(chat_template_name(formats[0].second.kind), named.c_str());
    EXPECT_TRUE(formats[0].second.markers_are_tokens);
    // The family's main template is also what the name alone gives (Qwen2.5's default system prompt included).
    if (c["primary"].get<bool>()) formats.emplace_back(named, resolve_chat_format(named, dir, tok));
    for (const auto& entry : formats) {
      const ChatFormat& format = entry.second;  // not a structured binding: the lambdas below capture it
      SCOPED_TRACE("data.chat_template " + entry.first);
      for (const auto& conv : c["conversations"]) {
        const auto r = record_of(conv["messages"]);
        Record open = r;
        open.messages.pop_back();
        if (conv.contains("error")) {  // transformers raised (Gemma 2: no system role): qtune refuses too
          for (const auto& msg : {qtune::test::error_of([&] { tokenize_record(r, format, tok, false, 4096); }),
                                  qtune::test::error_of([&] { prompt_ids(open, format, tok); })}) {
            EXPECT_NE(msg.find("oracle conversation"), std::string::npos) << msg;
            EXPECT_NE(msg.find("has no system role"), std::string::npos) << msg;
          }
          continue;
        }
        const auto text = conv["text"].get<std::string>();
        const auto s = tokenize_record(r, format, tok, /*train_on_prompt=*/false, 4096);
        EXPECT_EQ(s.input_ids, conv["ids"].get<std::vector<int64_t>>()) << text;
        EXPECT_EQ(trained_mask(s), conv["mask"].get<std::vector<int64_t>>()) << text;
        EXPECT_EQ(prompt_ids(open, format, tok), conv["prompt_ids"].get<std::vector<int64_t>>()) << text;
        // Each reply ends with the template's end-of-turn token, which is trained.
        const auto eot = tok.token_id(end_of_turn_marker(format.kind));
        ASSERT_TRUE(eot.has_value());
        for (size_t i = 0; i + 1 < s.labels.size(); ++i)
          if (s.labels[i] != kIgnoreLabel && s.labels[i + 1] == kIgnoreLabel) {
            EXPECT_EQ(s.input_ids[i], *eot) << text;
          }
        const auto all = tokenize_record(r, format, tok, /*train_on_prompt=*/true, 4096);
        EXPECT_EQ(all.labels, all.input_ids) << "train_on_prompt trains every token";
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
  EXPECT_NE(msg.find(kChatTemplateNames), std::string::npos) << msg;
  EXPECT_NE(msg.find("qwen3 (Qwen3)"), std::string::npos) << msg;
}

std::string stored_template(const std::string& file) {
  return qtune::test::read_file(std::string(QTUNE_TEST_SOURCE_DIR) + "/tests/oracle/chat_templates/" + file);
}

TEST(ChatTemplateMatch, Qwen25sTemplateWithAnotherDefaultSystemPromptKeepsIt) {
  auto jinja = stored_template("qwen2.5-instruct.jinja");
  ASSERT_FALSE(jinja.empty());
  const std::string qwen = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  const std::string other = "You are a careful tutor.";
  EXPECT_EQ(match_chat_template({jinja, "qwen"}).default_system.value_or(""), qwen);
  // A fine-tune that writes its own default system prompt in both of the template's places.
  for (auto at = jinja.find(qwen); at != std::string::npos; at = jinja.find(qwen, at + other.size()))
    jinja.replace(at, qwen.size(), other);
  const auto f = match_chat_template({jinja, "tuned"});
  EXPECT_EQ(f.kind, ChatTemplate::Qwen25);
  EXPECT_EQ(f.default_system.value_or(""), other);
  // Only one of the two replaced: the template renders two different prompts, which no named template does.
  auto half = stored_template("qwen2.5-instruct.jinja");
  half.replace(half.find(qwen), qwen.size(), other);
  const auto msg = qtune::test::error_of([&] { match_chat_template({half, "half/tokenizer_config.json"}); });
  EXPECT_NE(msg.find("half/tokenizer_config.json"), std::string::npos) << msg;
}

TEST(ChatTemplateMatch, FamiliesThatShipSeveralTemplatesGetEachOnesSystemHandling) {
  struct Case {
    const char* file;
    ChatTemplate kind;
    SystemMessage system;
    bool closing_eos;
  };
  for (const auto& c : {Case{"qwen3.jinja", ChatTemplate::Qwen3, SystemMessage::Rendered, false},
                        Case{"qwen3-revised.jinja", ChatTemplate::Qwen3, SystemMessage::Rendered, false},
                        Case{"phi4.jinja", ChatTemplate::Phi4, SystemMessage::Rendered, false},
                        Case{"gemma3-it.jinja", ChatTemplate::Gemma, SystemMessage::Rendered, false},
                        Case{"gemma2-it.jinja", ChatTemplate::Gemma, SystemMessage::Refused, false},
                        Case{"gemma-7b-it.jinja", ChatTemplate::Gemma, SystemMessage::Refused, false},
                        Case{"phi3-mini-4k-instruct.jinja", ChatTemplate::Phi3, SystemMessage::Rendered, true},
                        Case{"phi3.5-mini-instruct.jinja", ChatTemplate::Phi3, SystemMessage::RenderedUnlessEmpty, true},
                        Case{"phi3-medium-4k-instruct.jinja", ChatTemplate::Phi3, SystemMessage::Dropped, false}}) {
    SCOPED_TRACE(c.file);
    const auto jinja = stored_template(c.file);
    ASSERT_FALSE(jinja.empty());
    const auto f = match_chat_template({jinja, c.file});
    EXPECT_EQ(f.kind, c.kind);
    EXPECT_EQ(f.system, c.system);
    EXPECT_EQ(f.closing_eos, c.closing_eos);
  }
  // Gemma 2's refusal names the record and says what to do instead.
  const auto gemma2 = match_chat_template({stored_template("gemma2-it.jinja"), "gemma2"});
  Record r;
  r.source = "train.jsonl:3";
  r.messages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}};
  const auto msg = qtune::test::error_of([&] { render_pieces(r, gemma2); });
  EXPECT_NE(msg.find("train.jsonl:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has no system role"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.chat_template"), std::string::npos) << msg;
  EXPECT_NO_THROW(render_pieces(r, ChatTemplate::Gemma)) << "the named template joins it to the first user turn";
}

TEST(ChatTemplateMatch, AutoOnAModelWithoutATemplateSaysWhatToSet) {
  const auto dir = qtune::test::temp_dir();
  const auto msg = qtune::test::error_of([&] { resolve_chat_format("auto", dir, Tokenizer()); });
  EXPECT_NE(msg.find("has no chat template"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--template on the command line) to one of"), std::string::npos) << msg;
}

}  // namespace
