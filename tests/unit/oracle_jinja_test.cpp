// qtune's Jinja interpreter against jinja2 in transformers' chat-template environment (the oracle_jinja_render
// fixture, tests/oracle/jinja_render.py): the 70 real templates llama.cpp keeps for its tests, the templates of the
// real models set-up installs and the family templates the project keeps, and the project's templates that exercise
// each construct, on conversations with and without a system message, one turn and several, tool calls and results
// (with and without `tools`), add_generation_prompt on and off, enable_thinking on and off, unicode and
// whitespace-heavy content. Every render is byte-identical, `{% generation %}` spans are the same, and where
// jinja2 raises (a template refusing a conversation, a parse error) qtune raises too.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qtune/data/chat_template.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/records.h"
#include "qtune/io/atomic_file.h"
#include "qtune/jinja/pystr.h"
#include "qtune/jinja/template.h"
#include "test_util.h"

namespace {

using json = nlohmann::ordered_json;
using qtune::jinja::Template;

json cases() {
  const auto path = qtune::test::oracle_dir() + "/jinja/cases.json";
  if (!std::filesystem::exists(path)) return nullptr;
  std::ifstream in(path);
  return json::parse(in);
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first difference, for the failure message.
std::string diff(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t b = i > 80 ? i - 80 : 0;
  auto shown = [&](const std::string& s) {
    return json(qtune::jinja::py::encode(qtune::jinja::py::decode(s.substr(b, 200))))
        .dump(-1, ' ', false, json::error_handler_t::replace);
  };
  return "at byte " + std::to_string(i) + "\n  jinja2: " + shown(want) + "\n  qtune:  " + shown(got);
}

// transformers' generation spans are in code points; qtune's in bytes.
std::vector<std::vector<int64_t>> code_point_spans(const qtune::jinja::Rendered& r) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& g : r.generation) {
    const auto b = static_cast<int64_t>(qtune::jinja::py::length(std::string_view(r.text).substr(0, g.begin)));
    const auto e = static_cast<int64_t>(qtune::jinja::py::length(std::string_view(r.text).substr(0, g.end)));
    out.push_back({b, e});
  }
  return out;
}

// The kinds of qtune error that stand for a jinja2 exception class.
std::vector<qtune::jinja::ErrorKind> kinds_for(const std::string& jinja2_type) {
  using K = qtune::jinja::ErrorKind;
  if (jinja2_type == "TemplateSyntaxError" || jinja2_type == "TemplateAssertionError") return {K::Syntax};
  if (jinja2_type == "UndefinedError") return {K::Undefined};
  if (jinja2_type == "SecurityError") return {K::Security};
  if (jinja2_type == "TemplateError") return {K::Raised};
  if (jinja2_type == "TemplateRuntimeError" || jinja2_type == "FilterArgumentError") return {K::Syntax, K::Type};
  return {K::Type};  // TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError ...
}

// Renders every case of every template of `group`; returns how many templates rendered all their cases identically.
int check_group(const json& all, const std::string& group, int* total) {
  int identical = 0;
  *total = 0;
  for (const auto& t : all["templates"]) {
    if (t["group"] != group) continue;
    ++*total;
    const std::string name = t["name"];
    SCOPED_TRACE(name);
    std::unique_ptr<Template> tpl;
    try {
      tpl = std::make_unique<Template>(read(t["path"]), name);
    } catch (const qtune::Error& e) {
      EXPECT_TRUE(t.contains("compile_error")) << name << ": qtune does not parse what jinja2 does: " << e.what();
      if (t.contains("compile_error")) ++identical;
      continue;
    }
    if (t.contains("compile_error")) {
      ADD_FAILURE() << name << ": jinja2 refuses it (" << t["compile_error"].dump() << ") but qtune parses it";
      continue;
    }
    bool all_ok = true;
    for (const auto& c : t["cases"]) {
      const std::string cname = c["name"];
      std::string error;
      qtune::jinja::ErrorKind kind{};
      std::string message;
      qtune::jinja::Rendered r;
      try {
        r = tpl->render(c["vars"]);
      } catch (const qtune::jinja::TemplateError& e) {
        error = e.what();
        kind = e.kind();
        message = e.message();
      }
      if (c.contains("error")) {
        const std::string type = c["error"]["type"];
        const auto kinds = kinds_for(type);
        if (error.empty()) {
          ADD_FAILURE() << name << " / " << cname << ": jinja2 raises " << c["error"].dump() << ", qtune renders";
          all_ok = false;
        } else if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
          ADD_FAILURE() << name << " / " << cname << ": jinja2 raises " << c["error"].dump() << ", qtune a "
                        << qtune::jinja::error_kind_name(kind) << " error: " << error;
          all_ok = false;
        } else if (type == "TemplateError" && message != c["error"]["message"].get<std::string>()) {
          ADD_FAILURE() << name << " / " << cname << ": raise_exception's message differs: " << message;
          all_ok = false;
        }
        continue;
      }
      if (!error.empty()) {
        ADD_FAILURE() << name << " / " << cname << ": qtune raises " << error;
        all_ok = false;
        continue;
      }
      if (r.text != c["text"].get<std::string>()) {
        ADD_FAILURE() << name << " / " << cname << ": differs " << diff(c["text"], r.text);
        all_ok = false;
        continue;
      }
      if (code_point_spans(r) != c["generation"].get<std::vector<std::vector<int64_t>>>()) {
        ADD_FAILURE() << name << " / " << cname << ": generation spans differ";
        all_ok = false;
      }
    }
    if (all_ok) ++identical;
  }
  return identical;
}

TEST(OracleJinja, LlamaCppTestTemplatesRenderAsTransformers) {
  const auto all = cases();
  if (all.is_null()) GTEST_FAIL() << "jinja/cases.json missing: run through ctest (oracle_jinja_render)";
  if (!all["llama_cpp_templates_present"].get<bool>())
    GTEST_SKIP() << ".cache/llama-cpp-templates is absent: scripts/setup.sh extracts llama.cpp's test templates";
  int total = 0;
  const int identical = check_group(all, "llama.cpp", &total);
  EXPECT_EQ(total, 70);
  std::cout << identical << " of " << total << " llama.cpp test templates render identically\n";
}

TEST(OracleJinja, RealModelTemplatesRenderAsTransformers) {
  const auto all = cases();
  if (all.is_null()) GTEST_FAIL() << "jinja/cases.json missing: run through ctest (oracle_jinja_render)";
  int total = 0;
  check_group(all, "models", &total);
  EXPECT_GE(total, 10);
}

TEST(OracleJinja, ProjectTemplatesRenderAndRaiseAsTransformers) {
  const auto all = cases();
  if (all.is_null()) GTEST_FAIL() << "jinja/cases.json missing: run through ctest (oracle_jinja_render)";
  int total = 0;
  check_group(all, "project", &total);
  EXPECT_GE(total, 5);
}

// data.chat_template auto (a model whose template no named one renders: Llama 3.2's, Mistral Nemo's, Granite 3.3's)
// and FILE.jinja (a template with {% generation %} blocks) through tokenize_record: the ids are
// apply_chat_template(tokenize=True)'s, the trained tokens are transformers' assistant mask (generation blocks) or
// TRL's prefix-method mask, generation prompts are the same ids, and a template that rewrites earlier turns (Mistral
// Nemo moves the system prompt to the last user turn) is an error naming the record.
TEST(OracleJinjaPipeline, TheModelsOwnTemplateTrainsTheTokensTransformersMasks) {
  using namespace qtune::data;
  const auto all = cases();
  if (all.is_null()) GTEST_FAIL() << "jinja/cases.json missing: run through ctest (oracle_jinja_render)";
  if (all["pipeline"].empty()) GTEST_SKIP() << "SmolLM2's GGUF is absent: no tokenizer for the pipeline cases";
  int prefix_errors = 0, template_errors = 0, conversations = 0, tool_conversations = 0;
  for (const auto& c : all["pipeline"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const auto tok = Tokenizer::load(c["dir"]);
    const auto format = resolve_chat_format(c["setting"], c["dir"], tok);
    // Qwen2.5's and SmolLM2's templates are rendered by the named qwen2.5 and chatml, their records with tools by
    // the interpreted template.
    ASSERT_TRUE(format.jinja || format.model_jinja) << name << " should be rendered by the Jinja interpreter";
    // generate --chat stops at the token the template ends a reply with: right after the reply in transformers' text.
    const auto eot = end_of_turn_id(format, tok);
    if (name == "generation.jinja" || name == "Qwen-Qwen2.5-7B-Instruct.jinja")
      EXPECT_EQ(eot, tok.token_id("<|im_end|>"));
    for (const auto& first : c["conversations"]) {
      if (!eot || !first.contains("text")) continue;
      const std::string text = first["text"], reply = first["messages"].back()["content"];
      const auto after = text.find(reply);
      ASSERT_NE(after, std::string::npos);
      const auto rest = text.substr(after + reply.size());
      EXPECT_EQ(rest.find(tok.piece(*eot)), rest.find_first_not_of(" \n")) << rest;
      break;
    }
    for (const auto& conv : c["conversations"]) {
      SCOPED_TRACE(conv["name"].get<std::string>());
      // The conversation as a chat-jsonl record (TRL's format: tool calls, tool results, the record's tools).
      const auto file = qtune::test::temp_dir() + "/chat.jsonl";
      qtune::io::write_text_atomically(file, conv["record"].dump() + "\n");
      const auto records = read_records(file, DataFormat::ChatJsonl);
      ASSERT_EQ(records.size(), 1u);
      Record r = records[0];
      r.source = "oracle conversation";
      if (conv.contains("error")) {  // jinja2 raised for this template and conversation
        const auto msg = qtune::test::error_of([&] { tokenize_record(r, format, tok, false, 4096); });
        EXPECT_NE(msg.find("oracle conversation"), std::string::npos) << msg;
        ++template_errors;
        continue;
      }
      ++conversations;
      tool_conversations += conv["name"] == "tool_calls";
      Record open = r;
      open.messages.pop_back();
      EXPECT_EQ(prompt_ids(open, format, tok), conv["prompt_ids"].get<std::vector<int64_t>>());
      if (conv.contains("not_a_prefix")) {
        const auto msg = qtune::test::error_of([&] { tokenize_record(r, format, tok, false, 4096); });
        EXPECT_NE(msg.find("oracle conversation"), std::string::npos) << msg;
        EXPECT_NE(msg.find("prefix"), std::string::npos) << msg;
        ++prefix_errors;
        continue;
      }
      const auto s = tokenize_record(r, format, tok, /*train_on_prompt=*/false, 4096);
      EXPECT_EQ(s.input_ids, conv["ids"].get<std::vector<int64_t>>()) << conv["text"].get<std::string>();
      // A record without tools under a named template (Qwen2.5's) trains the reply and its end-of-turn marker, as
      // transformers' {% generation %} marks (OracleChatTemplate checks that); TRL's prefix method adds the "\n"
      // after the marker.
      if (!format.jinja && !r.uses_tools()) continue;
      std::vector<int64_t> mask;
      for (auto l : s.labels) mask.push_back(l != kIgnoreLabel);
      auto ones = [](const std::vector<int64_t>& m) {
        std::string out;
        for (size_t i = 0; i < m.size(); ++i)
          if (m[i]) out += std::to_string(i) + " ";
        return out;
      };
      EXPECT_EQ(mask, conv["mask"].get<std::vector<int64_t>>())
          << "trained positions: qtune " << ones(mask) << "; transformers " << ones(conv["mask"].get<std::vector<int64_t>>())
          << "\n" << conv["text"].get<std::string>();
    }
  }
  EXPECT_GE(prefix_errors, 1);
  EXPECT_GE(tool_conversations, 2) << "the tool-calling templates (Llama 3.2, Qwen2.5, ...) should render a tool call";
  std::printf("[ measured ] %d conversations as transformers renders and masks them, %d refused as jinja2 refuses, "
              "%d not a prefix\n", conversations, template_errors, prefix_errors);
}

// The differential fuzz test: random expressions and small templates from a grammar (tests/oracle/jinja_fuzz.py, a
// fixed seed and a bounded count), rendered by jinja2 and by qtune: the same text, or an error of the same class.
TEST(OracleJinjaFuzz, RandomTemplatesRenderAsJinja2) {
  const auto path = qtune::test::oracle_dir() + "/jinja/fuzz.json";
  if (!std::filesystem::exists(path)) GTEST_FAIL() << path << " missing: run through ctest (oracle_jinja_fuzz)";
  std::ifstream in(path);
  const json all = json::parse(in);
  const auto seed = all["seed"].get<int64_t>();
  int failures = 0;
  for (const auto& c : all["cases"]) {
    const std::string text = c["template"];
    std::string got, error;
    qtune::jinja::ErrorKind kind{};
    try {
      got = Template(text, "fuzz").render(all["vars"]).text;
    } catch (const qtune::jinja::TemplateError& e) {
      error = e.what();
      kind = e.kind();
    }
    bool ok;
    if (c.contains("error")) {
      const auto kinds = kinds_for(c["error"]["type"]);
      ok = !error.empty() && std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
    } else {
      ok = error.empty() && got == c["text"].get<std::string>();
    }
    if (!ok && ++failures <= 10)
      ADD_FAILURE() << "seed " << seed << " (QTUNE_JINJA_FUZZ_SEED): " << text << "\n  jinja2: "
                    << (c.contains("error") ? c["error"].dump() : json(c["text"]).dump())
                    << "\n  qtune:  " << (error.empty() ? json(got).dump() : error);
  }
  EXPECT_EQ(failures, 0) << "of " << all["cases"].size() << " cases, seed " << seed;
}

// `qtune template DIR --messages F.json [--ids | --assistant-mask]` prints apply_chat_template's text, its ids and
// the same assistant mask as OracleJinjaPipeline checks; a template the prefix method cannot split is an error.
TEST(OracleJinjaPipeline, TheTemplateCommandPrintsTransformersTextIdsAndMask) {
  const auto all = cases();
  if (all.is_null()) GTEST_FAIL() << "jinja/cases.json missing: run through ctest (oracle_jinja_render)";
  if (all["pipeline"].empty()) GTEST_SKIP() << "SmolLM2's GGUF is absent: no tokenizer for the pipeline cases";
  const auto dir = qtune::test::temp_dir();
  auto numbers = [](const std::string& s) {
    std::vector<int64_t> out;
    std::istringstream in(s);
    for (int64_t x; in >> x;) out.push_back(x);
    return out;
  };
  for (const auto& c : all["pipeline"]) {
    // Each run loads the binary and the tokenizer: the {% generation %} template and Mistral Nemo's (prefix error)
    // on the multi-turn conversation keep the test to seconds; the library path checks the rest.
    const std::string name = c["name"];
    if (name != "generation.jinja" && name.find("Mistral-Nemo") == std::string::npos) continue;
    SCOPED_TRACE(name);
    for (const auto& conv : c["conversations"]) {
      if (conv["name"] != "system_multi") continue;
      SCOPED_TRACE(conv["name"].get<std::string>());
      const std::string messages = dir + "/messages.json";
      std::ofstream(messages) << conv["messages"].dump();
      const std::string base = "template " + c["dir"].get<std::string>() + " --messages " + messages;
      const auto text = qtune::test::run_qtune(base);
      ASSERT_EQ(text.code, 0) << text.err;
      EXPECT_EQ(text.out, conv["text"].get<std::string>());
      const auto ids = qtune::test::run_qtune(base + " --ids");
      EXPECT_EQ(numbers(ids.out), conv["ids"].get<std::vector<int64_t>>()) << ids.err;
      const auto mask = qtune::test::run_qtune(base + " --assistant-mask");
      if (conv.contains("not_a_prefix")) {
        EXPECT_NE(mask.code, 0);
        EXPECT_NE(mask.err.find("prefix"), std::string::npos) << mask.err;
        continue;
      }
      EXPECT_EQ(numbers(mask.out), conv["mask"].get<std::vector<int64_t>>()) << mask.err;
    }
  }
}

}  // namespace
