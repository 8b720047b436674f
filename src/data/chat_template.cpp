#include "qtune/data/chat_template.h"
#include "qtune/jinja/chat_render.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "qtune/data/bpe/utf8.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::data {
namespace {

using Kind = TemplatePiece::Kind;

// Stanford Alpaca's prompts (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), with "### Response:\n".
constexpr const char* kAlpacaWithInput =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.";
constexpr const char* kAlpacaNoInput =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

// Qwen2.5's system prompt when a conversation has none (its template writes it in).
constexpr const char* kQwenSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// Python's str.strip() with no argument, which Jinja's trim filter and Meta's llama2 reference call: whitespace is
// what str.isspace() says, the Unicode White_Space property and U+001C..U+001F.
std::string python_strip(const std::string& s) {
  auto space = [](char32_t c) { return bpe::is_unicode_whitespace(c) || (c >= 0x1C && c <= 0x1F); };
  size_t begin = std::string::npos, end = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    bool is_space = false;
    if (bpe::utf8_valid_length(s, i) == 0) ++i;  // not UTF-8: a byte that is no whitespace
    else is_space = space(bpe::utf8_next(s, i));
    if (is_space) continue;
    if (begin == std::string::npos) begin = at;
    end = i;
  }
  return begin == std::string::npos ? "" : s.substr(begin, end - begin);
}

// Python's str.lstrip / rstrip / strip with an argument: only those characters.
std::string lstrip_chars(const std::string& s, const char* chars) {
  const auto b = s.find_first_not_of(chars);
  return b == std::string::npos ? "" : s.substr(b);
}
std::string rstrip_chars(const std::string& s, const char* chars) {
  const auto e = s.find_last_not_of(chars);
  return e == std::string::npos ? "" : s.substr(0, e + 1);
}

struct Turn {
  std::string user;
  std::optional<std::string> assistant;  // absent: the open turn a generation prompt ends with
};

struct Conversation {
  std::optional<std::string> system;
  std::vector<Turn> turns;
};

Conversation conversation_of(const Record& r, const ChatFormat& format, bool for_generation) {
  const std::string problem = conversation_problem(r.messages, for_generation);
  if (!problem.empty()) fail("{}: {}", r.source.empty() ? "record" : r.source, problem);
  if (r.uses_tools())
    fail("{}: has tool calls, tool results or tools, which only a model's own template renders; the named template "
         "'{}' has no tool turns (set data.chat_template: auto on a model whose template takes tools, or "
         "data.chat_template: FILE.jinja)",
         r.source.empty() ? "record" : r.source, chat_template_name(format.kind));
  Conversation c;
  size_t i = 0;
  if (r.messages[0].role == "system") c.system = r.messages[i++].content;
  for (; i < r.messages.size(); i += 2) {
    Turn turn{r.messages[i].content, std::nullopt};
    if (i + 1 < r.messages.size()) turn.assistant = r.messages[i + 1].content;
    c.turns.push_back(std::move(turn));
  }
  if (for_generation && c.turns.back().assistant) c.turns.back().assistant.reset();
  switch (format.system) {
    case SystemMessage::Rendered: break;
    case SystemMessage::RenderedUnlessEmpty:
      if (c.system && c.system->empty()) c.system.reset();
      break;
    case SystemMessage::Dropped: c.system.reset(); break;
    case SystemMessage::Refused:
      if (c.system)
        fail("{}: the model's chat template ({}) has no system role (its Jinja raises \"System role not "
             "supported\"); drop the system message, or set data.chat_template (--template) to {}, which joins it to "
             "the first user turn as Gemma 3's template does",
             r.source.empty() ? "record" : r.source, chat_template_name(format.kind), chat_template_name(format.kind));
      break;
  }
  if (!c.system && format.default_system) c.system = format.default_system;
  return c;
}

// Collects pieces, joining adjacent text of the same kind so that it is tokenized as one string.
class Pieces {
 public:
  void text(const std::string& s, bool response = false) {
    if (s.empty()) return;
    if (!out_.empty() && out_.back().kind == Kind::Text && out_.back().response == response) {
      out_.back().text += s;
      return;
    }
    out_.push_back({Kind::Text, s, response});
  }
  void text_start(const std::string& s) {
    out_.push_back({Kind::Text, s, false});
    out_.back().starts_text = true;
  }
  void bos() { out_.push_back({Kind::Bos, "", false}); }
  void eos(bool response = true) { out_.push_back({Kind::Eos, "", response}); }
  std::vector<TemplatePiece> take() { return std::move(out_); }

 private:
  std::vector<TemplatePiece> out_;
};

// Meta's llama/generation.py chat_completion: each turn is "[INST] {user} [/INST] {answer} " between BOS and EOS,
// the system prompt wrapped in <<SYS>> and prepended to the first user message, contents stripped. The space after
// "[/INST]" is the reply's: a generation prompt ends at "[/INST]", as Meta's and transformers' templates end it.
void llama2(const Conversation& c, Pieces& p) {
  for (size_t k = 0; k < c.turns.size(); ++k) {
    std::string user = c.turns[k].user;
    if (k == 0 && c.system) user = "<<SYS>>\n" + *c.system + "\n<</SYS>>\n\n" + user;
    p.bos();
    p.text("[INST] " + python_strip(user) + " [/INST]");
    if (c.turns[k].assistant) {
      p.text(" " + python_strip(*c.turns[k].assistant) + " ", true);
      p.eos();
    }
  }
}

// Mistral-7B-Instruct's template: one BOS, "[INST] {user} [/INST]{answer}</s>" per turn; a later turn's "[INST]"
// starts a text again, as Mistral's v1 reference writes it ("</s> [INST]").
void mistral(const Conversation& c, Pieces& p) {
  p.bos();
  for (size_t k = 0; k < c.turns.size(); ++k) {
    const std::string& user = c.turns[k].user;
    const std::string turn = "[INST] " + (k == 0 && c.system ? *c.system + "\n\n" + user : user) + " [/INST]";
    if (k == 0) p.text(turn);
    else p.text_start(turn);
    if (c.turns[k].assistant) {
      p.text(*c.turns[k].assistant, true);
      p.eos();
    }
  }
}

// ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message. With <|im_start|>/<|im_end|> in the vocabulary
// (SmolLM2, Qwen) exactly that, the reply trained up to its <|im_end|>; without them (a SentencePiece vocabulary) the
// markers are plain text, a BOS id starts the conversation and an EOS id follows each reply's <|im_end|>.
void chatml_with_marker_tokens(const Conversation& c, Pieces& p) {
  if (c.system) p.text("<|im_start|>system\n" + *c.system + "<|im_end|>\n");
  for (const auto& turn : c.turns) {
    p.text("<|im_start|>user\n" + turn.user + "<|im_end|>\n<|im_start|>assistant\n");
    if (turn.assistant) {
      p.text(*turn.assistant + "<|im_end|>", true);
      p.text("\n");
    }
  }
}

void chatml(const Conversation& c, Pieces& p) {
  p.bos();
  if (c.system) p.text("<|im_start|>system\n" + *c.system + "<|im_end|>\n");
  for (size_t k = 0; k < c.turns.size(); ++k) {
    if (k > 0) p.text("\n");  // the newline after the previous reply's <|im_end|>, which the EOS id came between
    p.text("<|im_start|>user\n" + c.turns[k].user + "<|im_end|>\n<|im_start|>assistant\n");
    if (c.turns[k].assistant) {
      p.text(*c.turns[k].assistant + "<|im_end|>", true);
      p.eos();
    }
  }
}

// Meta Llama 3 Instruct: "<|begin_of_text|>" (the BOS), then per message
// "<|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>"; the reply is trained through its <|eot_id|>.
void llama3(const Conversation& c, Pieces& p, bool markers_are_tokens) {
  auto header = [](const char* role) { return std::string("<|start_header_id|>") + role + "<|end_header_id|>\n\n"; };
  p.bos();
  if (c.system) p.text(header("system") + python_strip(*c.system) + "<|eot_id|>");
  for (const auto& turn : c.turns) {
    p.text(header("user") + python_strip(turn.user) + "<|eot_id|>" + header("assistant"));
    if (turn.assistant) {
      p.text(python_strip(*turn.assistant) + "<|eot_id|>", true);
      if (!markers_are_tokens) p.eos();
    }
  }
}

// Qwen3's template (Qwen3-0.6B .. 32B): ChatML, where a reply after the last user query carries a thinking block,
// "<think>\n{reasoning}\n</think>\n\n{answer}", always on the conversation's last message and on an earlier one only
// when it has reasoning; the replies before that query lose theirs. A reply's reasoning is what its content holds
// between <think> and </think>. The generation prompt is "<|im_start|>assistant\n" (enable_thinking left as is:
// the model opens its own thinking block), so the whole block is the reply's, and trained.
void qwen3(const Conversation& c, Pieces& p) {
  if (c.system) p.text("<|im_start|>system\n" + *c.system + "<|im_end|>\n");
  // The last user turn that is not a tool's response; without one, no reply comes after a query.
  auto is_tool_response = [](const std::string& s) {
    return s.rfind("<tool_response>", 0) == 0 && ends_with(s, "</tool_response>");
  };
  std::optional<size_t> last_query;
  for (size_t k = c.turns.size(); k-- > 0;)
    if (!is_tool_response(c.turns[k].user)) {
      last_query = k;
      break;
    }
  for (size_t k = 0; k < c.turns.size(); ++k) {
    const auto& turn = c.turns[k];
    p.text("<|im_start|>user\n" + turn.user + "<|im_end|>\n<|im_start|>assistant\n");
    if (!turn.assistant) continue;
    std::string content = *turn.assistant, reasoning;
    if (const auto close = content.find("</think>"); close != std::string::npos) {
      const std::string before = rstrip_chars(content.substr(0, close), "\n");
      const auto open = before.rfind("<think>");
      reasoning = lstrip_chars(open == std::string::npos ? before : before.substr(open + 7), "\n");
      content = lstrip_chars(content.substr(content.rfind("</think>") + 8), "\n");
    }
    const bool is_last_message = k + 1 == c.turns.size();
    std::string reply = content;
    if (last_query && k >= *last_query && (is_last_message || !reasoning.empty()))
      reply = "<think>\n" + lstrip_chars(rstrip_chars(reasoning, "\n"), "\n") + "\n</think>\n\n" +
              lstrip_chars(content, "\n");
    p.text(reply + "<|im_end|>", true);
    p.text("\n");
  }
}

// Gemma 2 and 3 ("<start_of_turn>{user|model}\n{content | trim}<end_of_turn>\n" after one BOS): Gemma has no
// system role; Gemma 3's template writes the system text, untrimmed, and a blank line before the first user turn.
void gemma(const Conversation& c, Pieces& p) {
  p.bos();
  for (size_t k = 0; k < c.turns.size(); ++k) {
    const std::string prefix = k == 0 && c.system ? *c.system + "\n\n" : "";
    p.text("<start_of_turn>user\n" + prefix + python_strip(c.turns[k].user) + "<end_of_turn>\n<start_of_turn>model\n");
    if (c.turns[k].assistant) {
      p.text(python_strip(*c.turns[k].assistant) + "<end_of_turn>", true);
      p.text("\n");
    }
  }
}

// Phi-3 / Phi-3.5: "<|{role}|>\n{content}<|end|>\n" per message; each user turn is followed by the assistant's
// header, which is also the generation prompt.
void phi3(const Conversation& c, Pieces& p, bool closing_eos, bool for_generation) {
  if (c.system) p.text("<|system|>\n" + *c.system + "<|end|>\n");
  for (const auto& turn : c.turns) {
    p.text("<|user|>\n" + turn.user + "<|end|>\n<|assistant|>\n");
    if (turn.assistant) {
      p.text(*turn.assistant + "<|end|>", true);
      p.text("\n");
    }
  }
  if (closing_eos && !for_generation) p.eos(false);
}

// Phi-4: "<|im_start|>{role}<|im_sep|>{content}<|im_end|>" per message, nothing between them.
void phi4(const Conversation& c, Pieces& p) {
  if (c.system) p.text("<|im_start|>system<|im_sep|>" + *c.system + "<|im_end|>");
  for (const auto& turn : c.turns) {
    p.text("<|im_start|>user<|im_sep|>" + turn.user + "<|im_end|><|im_start|>assistant<|im_sep|>");
    if (turn.assistant) p.text(*turn.assistant + "<|im_end|>", true);
  }
}

// Stanford Alpaca; a system message replaces the fixed preamble; later turns repeat Instruction/Response.
void alpaca(const Record& r, const Conversation& c, Pieces& p) {
  p.bos();
  const bool with_input = r.alpaca && !r.alpaca->input.empty();
  const std::string preamble = c.system ? *c.system : (with_input ? kAlpacaWithInput : kAlpacaNoInput);
  for (size_t k = 0; k < c.turns.size(); ++k) {
    if (k == 0 && with_input)
      p.text(preamble + "\n\n### Instruction:\n" + r.alpaca->instruction + "\n\n### Input:\n" + r.alpaca->input +
             "\n\n### Response:\n");
    else
      p.text((k == 0 ? preamble + "\n\n" : std::string("\n\n")) + "### Instruction:\n" + c.turns[k].user +
             "\n\n### Response:\n");
    if (c.turns[k].assistant) {
      p.text(*c.turns[k].assistant, true);
      p.eos();
    }
  }
}

// No template: "{user}\n{answer}" per turn (a system message as a first line of its own).
void none(const Conversation& c, Pieces& p) {
  p.bos();
  if (c.system) p.text(*c.system + "\n");
  for (const auto& turn : c.turns) {
    p.text(turn.user + "\n");
    if (turn.assistant) {
      p.text(*turn.assistant, true);
      p.eos();
    }
  }
}

// `text` as it encodes in the middle of a longer text: without the "▁" that add_dummy_prefix puts at the start.
// Encoding "\n" + text and dropping the ids of "\n" keeps every other space exactly as SentencePiece sees it.
constexpr const char* kContinuationPrefix = "\n";

std::vector<int64_t> encode_continuation(const Tokenizer& tok, const std::string& text) {
  const auto prefix = tok.encode(kContinuationPrefix, false, false);
  auto ids = tok.encode(kContinuationPrefix + text, false, false);
  if (ids.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), ids.begin()))
    return std::vector<int64_t>(ids.begin() + static_cast<std::ptrdiff_t>(prefix.size()), ids.end());
  // A vocabulary that merges "\n" with what follows: keep the dummy prefix rather than cut a merged piece.
  return tok.encode(text, false, false);
}

// The first `tokens` ids of a run spell its first `bytes` bytes.
struct Spelled {
  size_t tokens, bytes;
};

// Where the tokens of `ids` end in `text`, in one pass: the ids are decoded a few at a time after the ones before
// them (at first `context`, the ids that precede the run, for a tokenizer that spells a token differently at the
// start of a text), each group the fewest tokens that spell whole characters of `text`. nullopt when the ids do not
// spell `text` back (a normalizer changed it, an unknown character became <unk>): then only encoding the prefix
// before a boundary can tell which tokens are its own.
std::optional<std::vector<Spelled>> spell_out(const TokenizerBackend& tok, const std::vector<int64_t>& ids,
                                              const std::string& text, std::vector<int64_t> context) {
  constexpr size_t kMaxGroup = 8;  // byte tokens of one character (up to 4), with room for tokens merged around them
  std::vector<Spelled> out;
  std::string context_text = tok.decode(context, false);
  size_t t = 0, pos = 0;
  while (t < ids.size()) {
    size_t len = 0, n = 1;
    for (; n <= kMaxGroup && t + n <= ids.size(); ++n) {
      std::vector<int64_t> window = context;
      window.insert(window.end(), ids.begin() + static_cast<std::ptrdiff_t>(t),
                    ids.begin() + static_cast<std::ptrdiff_t>(t + n));
      const std::string s = tok.decode(window, false);
      if (s.compare(0, context_text.size(), context_text) != 0) continue;
      len = s.size() - context_text.size();
      if (len <= text.size() - pos && text.compare(pos, len, s, context_text.size(), len) == 0) break;
    }
    if (n > kMaxGroup || t + n > ids.size()) return std::nullopt;
    context.assign(ids.begin() + static_cast<std::ptrdiff_t>(t), ids.begin() + static_cast<std::ptrdiff_t>(t + n));
    context_text = tok.decode(context, false);
    t += n;
    pos += len;
    out.push_back({t, pos});
  }
  if (pos != text.size()) return std::nullopt;
  return out;
}

// How many tokens of the run belong before the boundary at byte `b`, by comparing `whole` with the encoding of the
// text before it (`before`): their common prefix, then the tokens that still spell only that text (byte-level BPE
// splits "\n\n" at the end of a prompt as one token but before a reply as two, and neither belongs to the reply).
size_t tokens_before_by_prefix(const Tokenizer& tok, const std::vector<int64_t>& whole,
                               const std::vector<int64_t>& before, const std::string& prompt_text) {
  size_t upto = 0;
  while (upto < before.size() && upto < whole.size() && before[upto] == whole[upto]) ++upto;
  while (upto < whole.size()) {
    const auto text = tok.backend().decode(
        std::vector<int64_t>(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(upto + 1)), false);
    if (text.size() > prompt_text.size() || prompt_text.compare(0, text.size(), text) != 0) break;
    ++upto;
  }
  return upto;
}

// Tokenizes pieces left to right; `labels` gets the id or -100 per the piece's kind and train_on_prompt. Each run of
// text between two ids is encoded as one string, as transformers encodes a rendered conversation, so the ids do not
// depend on where the template cuts prompt from response. A token belongs to the piece in which the text it spells
// ends; a token merged across a boundary is the later piece's (the response's). The run is encoded once and its
// tokens placed in the text by spell_out; only a tokenizer that does not spell its text back (or a boundary inside
// a character split over several tokens) falls back to encoding the text before each boundary, which costs the
// square of the conversation's length.
void tokenize_pieces(const std::vector<TemplatePiece>& pieces, const Tokenizer& tok, bool train_on_prompt,
                     const std::string& source, std::vector<int64_t>& ids, std::vector<int64_t>* labels) {
  bool at_text_start = true;  // after BOS (or at the very start): SentencePiece's dummy prefix belongs there
  auto append = [&](const std::vector<int64_t>& more, bool trained) {
    ids.insert(ids.end(), more.begin(), more.end());
    if (labels)
      for (auto id : more) labels->push_back(trained || train_on_prompt ? id : kIgnoreLabel);
  };
  // A BOS piece waits for the text after it: when that text starts with the BOS token itself (SmolLM2's BOS is
  // <|im_start|>), the id is not doubled. An EOS right after the reply's own EOS token (<|im_end|>) is dropped too.
  std::optional<bool> pending_bos;  // its `response` flag
  auto flush_bos = [&]() {
    if (pending_bos && tok.bos_id() >= 0) append({tok.bos_id()}, *pending_bos);
    pending_bos.reset();
  };
  for (size_t i = 0; i < pieces.size();) {
    const auto& piece = pieces[i];
    if (piece.kind == Kind::Bos) {
      flush_bos();
      pending_bos = piece.response;
      at_text_start = true;
      ++i;
      continue;
    }
    if (piece.kind == Kind::Eos) {
      flush_bos();
      if (tok.eos_id() < 0)
        fail("{}: the tokenizer {} has no EOS token, which ends every trained reply", source, tok.path());
      if (ids.empty() || ids.back() != tok.eos_id()) append({tok.eos_id()}, piece.response);
      at_text_start = false;
      ++i;
      continue;
    }
    if (piece.starts_text) at_text_start = true;
    size_t end = i;
    std::string run;
    std::vector<size_t> ends;  // where each piece of the run ends in `run`
    for (; end < pieces.size() && pieces[end].kind == Kind::Text; ++end) {
      run += pieces[end].text;
      ends.push_back(run.size());
    }
    auto encode = [&](const std::string& text) {
      return at_text_start ? tok.encode(text, false, false) : encode_continuation(tok, text);
    };
    const auto whole = encode(run);
    if (pending_bos && !whole.empty() && whole.front() == tok.bos_id()) pending_bos.reset();
    flush_bos();
    std::optional<std::vector<Spelled>> spelled;
    if (end - i > 1)
      spelled = spell_out(tok.backend(), whole, run,
                          at_text_start ? std::vector<int64_t>{} : tok.encode(kContinuationPrefix, false, false));
    size_t done = 0;     // tokens of `whole` given to a piece so far
    size_t group = 0;    // the first group of `spelled` not wholly before the current boundary
    for (size_t k = i; k < end; ++k) {
      size_t upto = whole.size();
      if (k + 1 < end) {
        const size_t b = ends[k - i];
        std::optional<size_t> placed;
        if (spelled) {
          while (group < spelled->size() && (*spelled)[group].bytes <= b) ++group;
          const size_t tokens_before = group == 0 ? 0 : (*spelled)[group - 1].tokens;
          const size_t bytes_before = group == 0 ? 0 : (*spelled)[group - 1].bytes;
          // A group that straddles b is one token (merged across: the later piece's), or several that split a
          // character, whose share is for the prefix comparison to say.
          const bool straddles = group < spelled->size() && bytes_before < b;
          const bool single = straddles && (*spelled)[group].tokens - tokens_before == 1;
          if (!straddles) placed = tokens_before;
          // One token merged across the end of a reply is the reply's (transformers' assistant mask takes the token
          // holding the reply's last character), across its start the reply's too.
          else if (single) placed = pieces[k].response && !pieces[k + 1].response ? (*spelled)[group].tokens : tokens_before;
        }
        upto = placed ? *placed : tokens_before_by_prefix(tok, whole, encode(run.substr(0, b)), run.substr(0, b));
        upto = std::max(upto, done);
      }
      append(std::vector<int64_t>(whole.begin() + static_cast<std::ptrdiff_t>(done),
                                  whole.begin() + static_cast<std::ptrdiff_t>(upto)),
             pieces[k].response);
      done = upto;
    }
    i = end;
  }
  flush_bos();
}

}  // namespace

constexpr ChatTemplate kAllTemplates[] = {ChatTemplate::Llama2, ChatTemplate::Mistral, ChatTemplate::ChatML,
                                         ChatTemplate::Llama3, ChatTemplate::Qwen25,  ChatTemplate::Qwen3,
                                         ChatTemplate::Gemma,  ChatTemplate::Phi3,    ChatTemplate::Phi4,
                                         ChatTemplate::Alpaca, ChatTemplate::None};

ChatTemplate parse_chat_template(const std::string& name) {
  for (auto t : kAllTemplates)
    if (name == chat_template_name(t)) return t;
  fail("unknown chat template '{}' (expected one of {})", name, kChatTemplateNames);
}

ChatFormat::ChatFormat(ChatTemplate k) : kind(k) {
  if (k == ChatTemplate::Qwen25) default_system = kQwenSystem;
  if (k == ChatTemplate::Phi3) closing_eos = true;
}

const char* end_of_turn_marker(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::ChatML:
    case ChatTemplate::Qwen25:
    case ChatTemplate::Qwen3:
    case ChatTemplate::Phi4: return "<|im_end|>";
    case ChatTemplate::Llama3: return "<|eot_id|>";
    case ChatTemplate::Gemma: return "<end_of_turn>";
    case ChatTemplate::Phi3: return "<|end|>";
    default: return "";
  }
}

std::vector<std::string> marker_tokens(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::ChatML:
    case ChatTemplate::Qwen25:
    case ChatTemplate::Qwen3: return {"<|im_start|>", "<|im_end|>"};
    case ChatTemplate::Llama3: return {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case ChatTemplate::Gemma: return {"<start_of_turn>", "<end_of_turn>"};
    case ChatTemplate::Phi3: return {"<|user|>", "<|assistant|>", "<|end|>"};
    case ChatTemplate::Phi4: return {"<|im_start|>", "<|im_sep|>", "<|im_end|>"};
    default: return {};
  }
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::Llama2: return "llama2";
    case ChatTemplate::Mistral: return "mistral";
    case ChatTemplate::ChatML: return "chatml";
    case ChatTemplate::Llama3: return "llama3";
    case ChatTemplate::Qwen25: return "qwen2.5";
    case ChatTemplate::Qwen3: return "qwen3";
    case ChatTemplate::Gemma: return "gemma";
    case ChatTemplate::Phi3: return "phi3";
    case ChatTemplate::Phi4: return "phi4";
    case ChatTemplate::Alpaca: return "alpaca";
    case ChatTemplate::None: return "none";
  }
  return "?";
}

namespace {

// The record rendered by the model's Jinja template: the text as one run, the replies (the template's
// {% generation %} blocks, else the prefix method's spans) marked as response. For generation, the messages up to
// the final reply with add_generation_prompt on.
std::vector<TemplatePiece> jinja_pieces(const Record& r, const jinja::ChatRenderer& renderer, const ChatFormat& t,
                                        bool for_generation) {
  const std::string record = r.source.empty() ? "record" : r.source;
  jinja::ChatInput in;
  in.extra = t.jinja_vars;
  // TRL merges a record's chat_template_kwargs into the call's keywords; the record's win.
  if (r.template_kwargs.is_object())
    for (const auto& [key, value] : r.template_kwargs.items()) in.extra[key] = value;
  in.tools = r.tools;
  size_t n = r.messages.size();
  if (for_generation && n > 0 && r.messages.back().role == "assistant") --n;
  for (size_t i = 0; i < n; ++i) {
    const auto& m = r.messages[i];
    nlohmann::ordered_json message = {{"role", m.role}, {"content", m.content}};
    if (m.extra.is_object())
      for (const auto& [key, value] : m.extra.items()) message[key] = value;
    in.messages.push_back(std::move(message));
  }
  in.add_generation_prompt = for_generation;
  Pieces p;
  try {
    const std::string text = renderer.render(in).text;
    if (for_generation) {
      p.text(text);
      return p.take();
    }
    size_t at = 0;
    for (const auto& span : renderer.assistant_spans(in, record)) {
      if (span.begin < at || span.end > text.size()) continue;  // a span transformers would not map either
      p.text(text.substr(at, span.begin - at));
      p.text(text.substr(span.begin, span.end - span.begin), true);
      at = span.end;
    }
    p.text(text.substr(at));
  } catch (const jinja::TemplateError& e) {
    fail("{}: {}", record, e.what());
  }
  return p.take();
}

}  // namespace

std::string ChatFormat::describe() const {
  return jinja ? "the model's own (" + jinja->jinja().name() + ")" : chat_template_name(kind);
}

std::vector<TemplatePiece> render_pieces(const Record& r, const ChatFormat& t, bool for_generation) {
  if (t.jinja && !r.is_text()) return jinja_pieces(r, *t.jinja, t, for_generation);
  if (t.model_jinja && !r.is_text() && r.uses_tools()) return jinja_pieces(r, *t.model_jinja, t, for_generation);
  Pieces p;
  if (r.is_text()) {
    p.bos();
    p.text(r.text, true);
    if (!for_generation) p.eos();
    auto pieces = p.take();
    pieces.front().response = true;  // text records train every token
    return pieces;
  }
  const Conversation c = conversation_of(r, t, for_generation);
  switch (t.kind) {
    case ChatTemplate::Llama2: llama2(c, p); break;
    case ChatTemplate::Mistral: mistral(c, p); break;
    case ChatTemplate::ChatML: t.markers_are_tokens ? chatml_with_marker_tokens(c, p) : chatml(c, p); break;
    case ChatTemplate::Llama3: llama3(c, p, t.markers_are_tokens); break;
    case ChatTemplate::Qwen25: chatml_with_marker_tokens(c, p); break;
    case ChatTemplate::Qwen3: qwen3(c, p); break;
    case ChatTemplate::Gemma: gemma(c, p); break;
    case ChatTemplate::Phi3: phi3(c, p, t.closing_eos, for_generation); break;
    case ChatTemplate::Phi4: phi4(c, p); break;
    case ChatTemplate::Alpaca: alpaca(r, c, p); break;
    case ChatTemplate::None: none(c, p); break;
  }
  return p.take();
}

std::string render_text(const Record& r, const ChatFormat& t, bool for_generation) {
  std::string out;
  for (const auto& piece : render_pieces(r, t, for_generation))
    out += piece.kind == Kind::Bos ? "<s>" : piece.kind == Kind::Eos ? "</s>" : piece.text;
  return out;
}

TokenizedSample tokenize_record(const Record& r, const ChatFormat& t, const Tokenizer& tok, bool train_on_prompt,
                                int64_t max_seq_len) {
  if (max_seq_len < 2) fail("max_seq_len must be at least 2, got {}", max_seq_len);
  TokenizedSample s;
  tokenize_pieces(render_pieces(r, t), tok, train_on_prompt, r.source, s.input_ids, &s.labels);
  if (static_cast<int64_t>(s.input_ids.size()) > max_seq_len) {
    s.input_ids.resize(max_seq_len);
    s.labels.resize(max_seq_len);
    s.truncated = true;
  }
  return s;
}

std::vector<int64_t> prompt_ids(const Record& r, const ChatFormat& t, const Tokenizer& tok) {
  std::vector<int64_t> ids;
  tokenize_pieces(render_pieces(r, t, /*for_generation=*/true), tok, false, r.source, ids, nullptr);
  return ids;
}

TokenizedDataset tokenize_records(const std::vector<Record>& records, const ChatFormat& t, const Tokenizer& tok,
                                  bool train_on_prompt, int64_t max_seq_len) {
  TokenizedDataset out;
  out.samples.reserve(records.size());
  for (const auto& r : records) {
    auto s = tokenize_record(r, t, tok, train_on_prompt, max_seq_len);
    out.truncated += s.truncated;
    // Position 0's label is never predicted (nothing comes before it).
    const bool trains = s.labels.size() > 1 && std::any_of(s.labels.begin() + 1, s.labels.end(), [](int64_t l) { return l != kIgnoreLabel; });
    if (!trains) {
      ++out.dropped;
      continue;
    }
    out.samples.push_back(std::move(s));
  }
  return out;
}

std::optional<int64_t> end_of_turn_id(const ChatFormat& format, const Tokenizer& tok) {
  if (!format.jinja) {
    const std::string marker = end_of_turn_marker(format.kind);
    return marker.empty() ? std::nullopt : tok.token_id(marker);
  }
  // A Jinja template names no marker: render a probe reply and read which token the text after it starts with.
  const std::string reply = "qtune probe reply";
  Record probe;
  probe.source = "the end-of-turn probe";
  probe.messages = {{"user", "Hello"}, {"assistant", reply}};
  std::string response;
  try {
    for (const auto& p : render_pieces(probe, format, /*for_generation=*/false))
      if (p.response && p.kind == TemplatePiece::Kind::Text) response += p.text;
  } catch (const std::exception&) {
    return std::nullopt;  // a template that refuses the probe: stop at EOS alone
  }
  const auto at = response.find(reply);
  if (at == std::string::npos) return std::nullopt;
  std::string tail = response.substr(at + reply.size());
  tail.erase(0, tail.find_first_not_of(" \t\r\n"));
  for (size_t n = std::min<size_t>(tail.size(), 64); n >= 2; --n) {
    const std::string marker = tail.substr(0, n);
    if (auto id = tok.token_id(marker); id && tok.encode(marker, false, false) == std::vector<int64_t>{*id}) return id;
  }
  return std::nullopt;
}

}  // namespace qtune::data
