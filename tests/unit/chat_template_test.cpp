#include "qtune/data/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qtune/data/synthetic_corpus.h"
#include "qtune/io/atomic_file.h"
#include "test_util.h"

namespace {

using namespace qtune::data;
using qtune::test::error_of;

const std::vector<ChatTemplate> kTemplates = {ChatTemplate::Llama2, ChatTemplate::Mistral, ChatTemplate::ChatML,
                                              ChatTemplate::Alpaca, ChatTemplate::None};

// A small BPE tokenizer trained once for the suite (well under a second), so that these tests run without ../shared.
const Tokenizer& tiny_tokenizer() {
  static const Tokenizer tok = [] {
    const auto dir = std::filesystem::temp_directory_path() / ("qtune_chat_template_tok_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    qtune::io::write_text_atomically((dir / "corpus.txt").string(), synthetic_corpus(1500, 7));
    train_bpe_tokenizer((dir / "corpus.txt").string(), (dir / "tok").string(), 320);
    auto t = Tokenizer::load((dir / "tok.model").string());
    qtune::remove_tree(dir.string());
    return t;
  }();
  return tok;
}

Record chat(std::vector<Message> messages) { return Record{std::move(messages), "", "test:1", std::nullopt}; }

Record alpaca_with_input() {
  Record r = chat({{"user", "Add the numbers.\n\n2 and 3"}, {"assistant", "The sum is 5."}});
  r.alpaca = AlpacaFields{"Add the numbers.", "2 and 3"};
  return r;
}

// Records exercising each template's branches: one turn, a system prompt, several turns, alpaca's input.
std::vector<Record> sample_records() {
  return {
      chat({{"user", "Where did Lily go?"}, {"assistant", "Lily went to the park."}}),
      chat({{"system", "You tell short stories."}, {"user", "Tell one."}, {"assistant", "Tom had a red ball."}}),
      chat({{"system", "Be kind."},
            {"user", "Hi there"},
            {"assistant", "Hello, friend."},
            {"user", "What did Tom find?"},
            {"assistant", "Tom found 4 more cats."},
            {"user", "And then?"},
            {"assistant", "They played all day."}}),
      alpaca_with_input(),
  };
}

int64_t count(const std::vector<int64_t>& v, int64_t x) { return std::count(v.begin(), v.end(), x); }

// The reply text the trained span of an assistant turn must decode to.
std::string expected_reply(const std::string& content, ChatTemplate t) {
  if (t == ChatTemplate::ChatML) return content + "<|im_end|>";
  return content;
}

TEST(ChatTemplate, ParsesTemplateNames) {
  for (auto t : kTemplates) EXPECT_EQ(parse_chat_template(chat_template_name(t)), t);
  // Every name the messages and --help list parses, and prints back as itself.
  std::string names = kChatTemplateNames;
  int listed = 0;
  for (size_t at = 0; at < names.size(); ++listed) {
    const auto end = std::min(names.find(", ", at), names.size());
    const auto name = names.substr(at, end - at);
    EXPECT_STREQ(chat_template_name(parse_chat_template(name)), name.c_str());
    at = end + 2;
  }
  EXPECT_EQ(listed, 11);
  const auto msg = error_of([] { parse_chat_template("vicuna"); });
  for (const char* name : {"'vicuna'", "llama2", "mistral", "chatml", "qwen2.5", "qwen3", "gemma", "phi3", "phi4",
                           "alpaca", "none"})
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
}

TEST(ChatTemplate, RendersTheReferenceFormats) {
  const auto one = chat({{"system", "You are kind."}, {"user", "Hi"}, {"assistant", "Hello!"}});
  const auto two = chat({{"system", "You are kind."},
                         {"user", "Hi"},
                         {"assistant", "Hello!"},
                         {"user", "Bye"},
                         {"assistant", "See you"}});
  EXPECT_EQ(render_text(one, ChatTemplate::Llama2), "<s>[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHi [/INST] Hello! </s>");
  EXPECT_EQ(render_text(two, ChatTemplate::Llama2),
            "<s>[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST] See you </s>");
  EXPECT_EQ(render_text(two, ChatTemplate::Mistral), "<s>[INST] You are kind.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]See you</s>");
  EXPECT_EQ(render_text(two, ChatTemplate::ChatML),
            "<s><|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Hello!<|im_end|></s>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nSee you<|im_end|></s>");
  EXPECT_EQ(render_text(alpaca_with_input(), ChatTemplate::Alpaca),
            "<s>Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n"
            "### Input:\n2 and 3\n\n### Response:\nThe sum is 5.</s>");
  EXPECT_EQ(render_text(chat({{"user", "Hi"}, {"assistant", "Hello!"}}), ChatTemplate::Alpaca),
            "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>");
  EXPECT_EQ(render_text(chat({{"user", "Hi"}, {"assistant", "Hello!"}}), ChatTemplate::None), "<s>Hi\nHello!</s>");
  // Generation prompts end where the reply starts.
  EXPECT_EQ(render_text(two, ChatTemplate::ChatML, true),
            "<s><|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Hello!<|im_end|></s>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_text(chat({{"user", "Hi"}}), ChatTemplate::Llama2, true), "<s>[INST] Hi [/INST]");
  Record text;
  text.text = "Once upon a time.";
  EXPECT_EQ(render_text(text, ChatTemplate::ChatML), "<s>Once upon a time.</s>") << "templates do not apply to text";
}

// The newer families' named templates, as their Jinja (tests/oracle/chat_templates/) renders the same conversation
// with bos_token "<s>" and eos_token "</s>"; OracleChatTemplate.NewerFamilies* checks the ids against transformers.
TEST(ChatTemplate, RendersTheNewerFamiliesFormats) {
  const std::vector<Message> turns = {
      {"user", "Hi"}, {"assistant", "<think>Greet.</think>Hello!"}, {"user", " Bye "}, {"assistant", "See you"}};
  auto with_system = turns;
  with_system.insert(with_system.begin(), {"system", "You are kind."});
  const auto two = chat(with_system), no_system = chat(turns);
  EXPECT_EQ(render_text(no_system, ChatTemplate::Qwen25),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>Greet.</think>Hello!<|im_end|>\n"
            "<|im_start|>user\n Bye <|im_end|>\n<|im_start|>assistant\nSee you<|im_end|>\n");
  // Qwen3: the reply before the last query loses its reasoning; the last one gets an (empty) thinking block.
  EXPECT_EQ(render_text(two, ChatTemplate::Qwen3),
            "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Hello!<|im_end|>\n<|im_start|>user\n Bye <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
            "See you<|im_end|>\n");
  EXPECT_EQ(render_text(two, ChatTemplate::Qwen3, true),
            "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Hello!<|im_end|>\n<|im_start|>user\n Bye <|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_text(two, ChatTemplate::Gemma),
            "<s><start_of_turn>user\nYou are kind.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
            "<think>Greet.</think>Hello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
            "See you<end_of_turn>\n");
  EXPECT_EQ(render_text(two, ChatTemplate::Phi3),
            "<|system|>\nYou are kind.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n<think>Greet.</think>Hello!<|end|>\n"
            "<|user|>\n Bye <|end|>\n<|assistant|>\nSee you<|end|>\n</s>");
  EXPECT_EQ(render_text(two, ChatTemplate::Phi3, true),
            "<|system|>\nYou are kind.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n<think>Greet.</think>Hello!<|end|>\n"
            "<|user|>\n Bye <|end|>\n<|assistant|>\n");
  EXPECT_EQ(render_text(two, ChatTemplate::Phi4),
            "<|im_start|>system<|im_sep|>You are kind.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
            "<|im_start|>assistant<|im_sep|><think>Greet.</think>Hello!<|im_end|><|im_start|>user<|im_sep|> Bye "
            "<|im_end|><|im_start|>assistant<|im_sep|>See you<|im_end|>");
}

TEST(ChatTemplate, BosEosAndMaskingForEveryTemplate) {
  const auto& tok = tiny_tokenizer();
  const int64_t bos = tok.bos_id(), eos = tok.eos_id();
  for (auto t : kTemplates) {
    for (const auto& r : sample_records()) {
      SCOPED_TRACE(std::string(chat_template_name(t)) + ": " + render_text(r, t));
      std::vector<std::string> replies;
      for (const auto& m : r.messages)
        if (m.role == "assistant") replies.push_back(m.content);
      const int64_t turns = static_cast<int64_t>(replies.size());

      const auto s = tokenize_record(r, t, tok, /*train_on_prompt=*/false, 4096);
      const auto& ids = s.input_ids;
      ASSERT_EQ(s.labels.size(), ids.size());
      EXPECT_FALSE(s.truncated);
      ASSERT_GE(ids.size(), 2u);
      EXPECT_EQ(ids.front(), bos);
      EXPECT_EQ(ids.back(), eos);
      EXPECT_EQ(count(ids, bos), t == ChatTemplate::Llama2 ? turns : 1) << "llama2: one BOS per turn, others: one";
      EXPECT_EQ(count(ids, eos), turns) << "one EOS after every reply";
      for (size_t i = 1; i < ids.size(); ++i) {
        if (ids[i] == bos) {
          EXPECT_NE(ids[i - 1], bos) << "two BOS in a row at " << i;
          EXPECT_EQ(ids[i - 1], eos) << "a later BOS starts a turn after the previous EOS";
        }
        if (ids[i] == eos) {
          EXPECT_EQ(s.labels[i], eos) << "the EOS that ends a reply is trained";
        }
      }
      // The trained spans are exactly the replies, each followed by its EOS.
      std::vector<std::vector<int64_t>> spans;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (s.labels[i] == kIgnoreLabel) continue;
        EXPECT_EQ(s.labels[i], ids[i]);
        if (i == 0 || s.labels[i - 1] == kIgnoreLabel) spans.emplace_back();
        spans.back().push_back(ids[i]);
      }
      ASSERT_EQ(static_cast<int64_t>(spans.size()), turns);
      for (int64_t k = 0; k < turns; ++k) {
        EXPECT_EQ(spans[k].back(), eos);
        EXPECT_EQ(count(spans[k], eos), 1);
        EXPECT_EQ(tok.decode(spans[k]), expected_reply(replies[k], t));
      }
      // The prompt generation sees is everything before the last reply.
      const auto prompt = prompt_ids(r, t, tok);
      const size_t last_reply = ids.size() - spans.back().size();
      EXPECT_EQ(prompt, std::vector<int64_t>(ids.begin(), ids.begin() + last_reply));

      const auto all = tokenize_record(r, t, tok, /*train_on_prompt=*/true, 4096);
      EXPECT_EQ(all.input_ids, ids) << "train_on_prompt changes labels only";
      EXPECT_EQ(all.labels, ids) << "train_on_prompt trains every token";
    }
  }
}

// One turn, one BOS, one EOS: the piecewise ids must be those of the rendered text encoded as a whole (the
// header's add_dummy_prefix rule), e.g. no "▁" between mistral's "[/INST]" and the reply.
// Tool calls and tool results have no turns in the named templates: a record with them is refused, naming it and what
// renders it instead, never rendered without its tool turns.
TEST(ChatTemplate, NamedTemplatesRefuseToolTurns) {
  Record r = chat({{"user", "Weather?"}, {"assistant", ""}, {"tool", "22"}, {"assistant", "22 C."}});
  r.messages[1].extra = {{"tool_calls", {{{"function", {{"name", "get_weather"}}}}}}};
  r.source = "tools.jsonl:3";
  for (auto t : kTemplates) {
    const auto msg = error_of([&] { tokenize_record(r, t, tiny_tokenizer(), false, 4096); });
    EXPECT_NE(msg.find("tools.jsonl:3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("only a model's own template"), std::string::npos) << msg;
  }
  Record with_tools = chat({{"user", "u"}, {"assistant", "a"}});
  with_tools.tools = nlohmann::ordered_json::array({{{"type", "function"}}});
  EXPECT_NE(error_of([&] { render_text(with_tools, ChatTemplate::ChatML); }).find("tool"), std::string::npos);
}

TEST(ChatTemplate, SingleTurnIdsEqualTheWholeRenderedTextEncoded) {
  const auto& tok = tiny_tokenizer();
  for (auto t : kTemplates) {
    for (const auto& r : sample_records()) {
      if (r.messages.size() > 3) continue;
      std::string text = render_text(r, t);
      text = text.substr(3, text.size() - 7);  // without "<s>" and "</s>"
      EXPECT_EQ(tokenize_record(r, t, tok, false, 4096).input_ids, tok.encode(text, true, true))
          << chat_template_name(t) << ": " << text;
    }
  }
}

// Counts what the tokenizer under test is asked to encode and decode.
class CountingBackend : public TokenizerBackend {
 public:
  explicit CountingBackend(const TokenizerBackend& inner) : inner_(inner) {}
  std::vector<int64_t> encode(const std::string& text) const override {
    encoded_bytes += text.size();
    return inner_.encode(text);
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    decoded_ids += ids.size();
    return inner_.decode(ids, skip_special);
  }
  std::string piece(int64_t id) const override { return inner_.piece(id); }
  std::optional<int64_t> token_id(const std::string& piece) const override { return inner_.token_id(piece); }
  int64_t vocab_size() const override { return inner_.vocab_size(); }
  bool is_special(int64_t id) const override { return inner_.is_special(id); }
  SpecialTokens special_tokens() const override { return inner_.special_tokens(); }
  const char* kind() const override { return inner_.kind(); }

  mutable size_t encoded_bytes = 0, decoded_ids = 0;

 private:
  const TokenizerBackend& inner_;
};

// A conversation whose markers are tokens has no BOS/EOS between its turns: it is one run of text, encoded once,
// and its tokens are placed at the turn boundaries without encoding each prefix again (which made 400 turns take
// 20 s). The work stays linear in the conversation: a few encodes of it, a few decodes per token.
TEST(ChatTemplate, ManyTurnsAreEncodedOnceNotOncePerTurn) {
  const auto counting = std::make_shared<CountingBackend>(tiny_tokenizer().backend());
  const auto tok = Tokenizer::from_backend(counting, "counting tokenizer");
  std::vector<Message> messages;
  std::vector<std::string> replies;
  for (int k = 0; k < 400; ++k) {
    messages.push_back({"user", "Where did Lily go on day " + std::to_string(k) + "?"});
    replies.push_back("Lily went to the park with Tom " + std::to_string(k % 7) + " times.");
    messages.push_back({"assistant", replies.back()});
  }
  const auto r = chat(messages);
  ChatFormat format(ChatTemplate::Llama3);
  format.markers_are_tokens = true;  // the markers stay text in this vocabulary, and no EOS id cuts the run
  const size_t rendered = render_text(r, format).size();
  const auto s = tokenize_record(r, format, tok, /*train_on_prompt=*/false, 1 << 20);
  EXPECT_LT(counting->encoded_bytes, 3 * rendered) << "the conversation is " << rendered << " bytes";
  EXPECT_LT(counting->decoded_ids, 20 * s.input_ids.size()) << "the conversation is " << s.input_ids.size() << " ids";
  // Each reply, and nothing else, is trained, through its <|eot_id|>.
  std::vector<std::vector<int64_t>> spans;
  for (size_t i = 0; i < s.labels.size(); ++i) {
    if (s.labels[i] == kIgnoreLabel) continue;
    if (i == 0 || s.labels[i - 1] == kIgnoreLabel) spans.emplace_back();
    spans.back().push_back(s.labels[i]);
  }
  ASSERT_EQ(spans.size(), replies.size());
  for (size_t k = 0; k < spans.size(); ++k) EXPECT_EQ(tok.decode(spans[k]), replies[k] + "<|eot_id|>") << k;
  EXPECT_EQ(s.input_ids, tok.encode(render_text(r, format).substr(3), true, false)) << "the whole text, encoded once";
}

TEST(ChatTemplate, TextRecordIsBosTextEosAllTrained) {
  const auto& tok = tiny_tokenizer();
  Record r;
  r.text = "One day, Lily went to the park.";
  for (auto t : kTemplates) {
    const auto s = tokenize_record(r, t, tok, false, 512);
    auto expected = tok.encode(r.text, /*add_bos=*/true, /*add_eos=*/true);
    EXPECT_EQ(s.input_ids, expected);
    EXPECT_EQ(s.labels, expected);
  }
  EXPECT_EQ(prompt_ids(r, ChatTemplate::None, tok), tok.encode(r.text, true, false));
}

// Special tokens written in a message are their ids, as transformers and llama.cpp tokenize a rendered conversation
// (a SentencePiece vocabulary's control pieces too): the template's own BOS/EOS plus those of the text.
TEST(ChatTemplate, SpecialTokenTextInContentIsTheToken) {
  const auto& tok = tiny_tokenizer();
  const auto r = chat({{"user", "What is <s>?"}, {"assistant", "It ends with </s> and <s>"}});
  for (auto t : kTemplates) {
    const auto s = tokenize_record(r, t, tok, false, 512);
    EXPECT_EQ(count(s.input_ids, tok.bos_id()), 1 + 2) << chat_template_name(t);
    EXPECT_EQ(count(s.input_ids, tok.eos_id()), 1 + 1) << chat_template_name(t);
  }
}

TEST(ChatTemplate, TruncationKeepsTheStartAndIsCounted) {
  const auto& tok = tiny_tokenizer();
  const auto r = sample_records()[2];
  const auto full = tokenize_record(r, ChatTemplate::ChatML, tok, false, 4096);
  const int64_t max_len = static_cast<int64_t>(full.input_ids.size()) - 5;
  const auto cut = tokenize_record(r, ChatTemplate::ChatML, tok, false, max_len);
  EXPECT_TRUE(cut.truncated);
  ASSERT_EQ(static_cast<int64_t>(cut.input_ids.size()), max_len);
  EXPECT_EQ(cut.input_ids, std::vector<int64_t>(full.input_ids.begin(), full.input_ids.begin() + max_len));
  EXPECT_EQ(cut.labels, std::vector<int64_t>(full.labels.begin(), full.labels.begin() + max_len));

  // A sample cut inside its first prompt has nothing left to train on: dropped and counted.
  const auto short_one = chat({{"user", "Hi"}, {"assistant", "Yes."}});
  const int64_t prompt_len = static_cast<int64_t>(prompt_ids(r, ChatTemplate::ChatML, tok).size());
  const int64_t first_reply = [&] {
    for (size_t i = 0; i < full.labels.size(); ++i)
      if (full.labels[i] != kIgnoreLabel) return static_cast<int64_t>(i);
    return int64_t{-1};
  }();
  ASSERT_GT(first_reply, 4);
  ASSERT_LT(first_reply, prompt_len);
  const auto ds = tokenize_records({r, short_one, r}, ChatTemplate::ChatML, tok, false, first_reply);
  EXPECT_EQ(ds.truncated, 2);
  EXPECT_EQ(ds.dropped, 2);
  ASSERT_EQ(ds.samples.size(), 1u);
  EXPECT_EQ(ds.samples[0].input_ids, tokenize_record(short_one, ChatTemplate::ChatML, tok, false, 512).input_ids);
}

TEST(ChatTemplate, RejectsWhatItCannotRender) {
  const auto& tok = tiny_tokenizer();
  auto r = chat({{"user", "Hi"}});
  r.source = "data.jsonl:7";
  auto msg = error_of([&] { tokenize_record(r, ChatTemplate::Llama2, tok, false, 512); });
  EXPECT_NE(msg.find("data.jsonl:7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ends with an assistant reply"), std::string::npos) << msg;
  EXPECT_NO_THROW(prompt_ids(r, ChatTemplate::Llama2, tok)) << "a generation prompt may end with the user";
  r.messages = {{"user", "Hi"}, {"robot", "beep"}};
  msg = error_of([&] { tokenize_record(r, ChatTemplate::ChatML, tok, false, 512); });
  EXPECT_NE(msg.find("unknown role 'robot'"), std::string::npos) << msg;
  msg = error_of([&] { tokenize_record(chat({{"user", "a"}, {"assistant", "b"}}), ChatTemplate::None, tok, false, 1); });
  EXPECT_NE(msg.find("max_seq_len"), std::string::npos) << msg;
}

// With the real stories260K tokenizer: the piecewise ids equal the rendered text encoded as a whole (BOS/EOS as
// ids), which is what the dummy-prefix handling promises; and the mask starts exactly where the prompt ends.
TEST(ChatTemplate, DollyIdsEqualTheWholeRenderedTextEncoded) {
  QTUNE_REQUIRE_SHARED();
  const auto tok = Tokenizer::load(qtune::test::shared_dir() + "/models/stories260K");
  const auto records = read_records(qtune::test::shared_dir() + "/data/dolly_tiny_train.jsonl", DataFormat::AlpacaJsonl);
  for (auto t : kTemplates) {
    for (const auto& r : records) {
      std::string text = render_text(r, t);
      ASSERT_EQ(text.rfind("<s>", 0), 0u);
      ASSERT_EQ(text.substr(text.size() - 4), "</s>");
      text = text.substr(3, text.size() - 7);
      const auto s = tokenize_record(r, t, tok, false, 4096);
      auto expected = tok.encode(text, true, true);
      EXPECT_EQ(s.input_ids, expected) << chat_template_name(t) << " " << r.source;
      const auto prompt = prompt_ids(r, t, tok);
      ASSERT_LT(prompt.size(), s.labels.size());
      EXPECT_EQ(s.labels[prompt.size() - 1], kIgnoreLabel);
      EXPECT_NE(s.labels[prompt.size()], kIgnoreLabel) << chat_template_name(t) << " " << r.source;
    }
  }
  // Where a reply follows a space (llama2) it starts a word ("▁Tope"); after "]" (mistral) it does not.
  const auto& tope = records[1];
  const auto first_reply_piece = [&](ChatTemplate t) {
    return tok.piece(tokenize_record(tope, t, tok, false, 512).input_ids[prompt_ids(tope, t, tok).size()]);
  };
  EXPECT_EQ(first_reply_piece(ChatTemplate::Llama2).rfind("\xE2\x96\x81", 0), 0u);
  EXPECT_NE(first_reply_piece(ChatTemplate::Mistral).rfind("\xE2\x96\x81", 0), 0u);
}

}  // namespace

namespace {

using namespace qtune::data;

// Llama 2's tokenizer keeps whitespace (normalizer: dummy prefix, no stripping), so "[/INST] " encoded on its own
// ends in a "▁" token of its own; the ids must still be Meta's, which encode each "[INST] .. [/INST] answer " turn
// as one string: "] ▁He ll o", never "] ▁ ▁He ll o".
TEST(ChatTemplate, Llama2IdsEqualMetasWhenTheTokenizerKeepsWhitespace) {
  const auto dir = std::filesystem::temp_directory_path() / ("qtune_chat_template_ws_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  qtune::io::write_text_atomically((dir / "corpus.txt").string(), synthetic_corpus(1500, 7));
  train_bpe_tokenizer((dir / "corpus.txt").string(), (dir / "tok").string(), 320, /*remove_extra_whitespaces=*/false);
  const auto tok = Tokenizer::load((dir / "tok.model").string());
  qtune::remove_tree(dir.string());
  ASSERT_GT(tok.encode("a  b", false, false).size(), tok.encode("a b", false, false).size())
      << "the tokenizer must keep runs of spaces for this test to mean anything";

  const auto r = chat({{"system", "Be kind."},
                       {"user", "Hi there"},
                       {"assistant", "Hello, friend."},
                       {"user", "What did Tom find?"},
                       {"assistant", "Tom found 4 more cats."}});
  std::vector<int64_t> meta;
  for (const std::string turn : {"[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi there [/INST] Hello, friend. ",
                                 "[INST] What did Tom find? [/INST] Tom found 4 more cats. "}) {
    const auto ids = tok.encode(turn, true, true);
    meta.insert(meta.end(), ids.begin(), ids.end());
  }
  const auto s = tokenize_record(r, ChatTemplate::Llama2, tok, false, 4096);
  EXPECT_EQ(s.input_ids, meta);
  // The trained span starts with the reply's first word, its leading "▁" included, and ends with EOS.
  const auto prompt = prompt_ids(r, ChatTemplate::Llama2, tok);
  ASSERT_LT(prompt.size(), s.labels.size());
  EXPECT_EQ(s.labels[prompt.size() - 1], kIgnoreLabel);
  EXPECT_EQ(tok.piece(s.input_ids[prompt.size()]).rfind("\xE2\x96\x81T", 0), 0u) << tok.piece(s.input_ids[prompt.size()]);
  // Every template's single-turn ids are its rendered text encoded whole, with this tokenizer too.
  const auto one = chat({{"user", "Where did Lily go?"}, {"assistant", "Lily went to the park."}});
  for (auto t : kTemplates) {
    std::string text = render_text(one, t);
    text = text.substr(3, text.size() - 7);
    EXPECT_EQ(tokenize_record(one, t, tok, false, 4096).input_ids, tok.encode(text, true, true))
        << chat_template_name(t) << ": " << text;
  }
}

}  // namespace
