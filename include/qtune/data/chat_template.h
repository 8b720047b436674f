#pragma once
// Turning a Record into token ids and labels: the chat template renders it as text pieces (prompt or response)
// with BOS/EOS as token ids between them. Each run of text between two ids is tokenized as one string, as
// transformers tokenizes a rendered conversation (and Meta's llama2 reference each "[INST] .. [/INST] answer " turn),
// so the ids never depend on where the prompt ends; the prompt/response boundary falls after the last token that
// spells only prompt text (a token merged across it is the response's), and the prompt can be masked out of the loss.
// The run is encoded once and its tokens placed in the text by decoding them a few at a time, so a long conversation
// costs about one encode, not one per turn.
//
// SentencePiece's add_dummy_prefix: a run right after BOS (or at the start) is encoded as a text start, with "▁";
// a run after an EOS id (chatml's "\n<|im_start|>user..") as the middle of a text, without it. prompt_ids() renders
// the same pieces without the final reply: what generation feeds the model is what training showed it before a
// response, up to a token that training merged across the boundary.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qtune/data/records.h"
#include "qtune/data/tokenizer.h"
#include <memory>

#include <nlohmann/json.hpp>

namespace qtune::jinja {
class ChatRenderer;  // jinja/chat_render.h
}

namespace qtune::data {

// Qwen25: ChatML with Qwen2.5's default system prompt. Qwen3: ChatML whose last reply carries its thinking block.
// Gemma: Gemma 2/3 (<start_of_turn>user / model, no system role). Phi3: <|user|> ... <|end|>. Phi4: ChatML with
// <|im_sep|> after the role and no newlines between turns.
enum class ChatTemplate { Llama2, Mistral, ChatML, Llama3, Qwen25, Qwen3, Gemma, Phi3, Phi4, Alpaca, None };

ChatTemplate parse_chat_template(const std::string& name);  // one of kChatTemplateNames
const char* chat_template_name(ChatTemplate t);
constexpr const char* kChatTemplateNames =
    "llama2, mistral, chatml, llama3, qwen2.5, qwen3, gemma, phi3, phi4, alpaca, none";

// What a template does with a conversation's system message, where models of one family ship different templates.
enum class SystemMessage {
  Rendered,             // as the named template renders it (its own turn; Gemma: joined to the first user turn)
  RenderedUnlessEmpty,  // Phi-3.5-mini: an empty one renders nothing
  Dropped,              // Phi-3-medium: its template ignores the system role
  Refused,              // Gemma 1 and 2: their templates raise "System role not supported"
};

// A named template as one model uses it (data/chat_template_match.h finds it from the model's own Jinja template).
struct ChatFormat {
  ChatTemplate kind = ChatTemplate::Alpaca;
  // The system message the model's template inserts when a conversation has none (SmolLM2: "You are a helpful AI
  // assistant named SmolLM, trained by Hugging Face").
  std::optional<std::string> default_system;
  // The tokenizer has the template's markers as tokens (<|im_start|>/<|im_end|>, <|start_header_id|>/<|eot_id|>):
  // the text is rendered exactly as the model's Jinja renders it, and the end-of-turn marker that closes a reply is
  // the trained end of it; no separate EOS id follows. Otherwise (a SentencePiece vocabulary without them) the
  // markers are plain text and BOS/EOS ids frame the conversation.
  bool markers_are_tokens = false;
  SystemMessage system = SystemMessage::Rendered;
  // The template closes a training conversation with eos_token after the last turn's end-of-turn marker
  // (Phi-3-mini: "{% else %}{{ eos_token }}"); the EOS is the prompt's, not trained.
  bool closing_eos = false;
  // The model's own Jinja template (or a user's FILE.jinja), rendered by qtune's interpreter as transformers'
  // apply_chat_template renders it, where no named template renders it identically. The replies are what its
  // {% generation %} blocks mark, else what the prefix method finds (jinja/chat_render.h); the text is tokenized
  // as is, so BOS and the end-of-turn markers are what the template writes. `kind` is None then.
  std::shared_ptr<const jinja::ChatRenderer> jinja;
  nlohmann::ordered_json jinja_vars = nlohmann::ordered_json::object();  // bos_token, eos_token ... as HF passes them
  // Where `auto` chose a named template because it renders the model's own identically: the model's template, for
  // the records with tool calls, tool results or tools, which the named templates have no turns for.
  std::shared_ptr<const jinja::ChatRenderer> model_jinja;
  // The named template as its family ships it: qwen2.5 with Qwen's default system prompt, phi3 as Phi-3-mini.
  ChatFormat(ChatTemplate k = ChatTemplate::Alpaca);  // NOLINT: a bare name is a format
  // "qwen3", or the Jinja template's source.
  std::string describe() const;
};

// The end-of-turn marker of a template ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"), empty for those
// that end turns with EOS.
const char* end_of_turn_marker(ChatTemplate t);

// The markers a template writes that the model's tokenizer should have as tokens (empty for llama2, mistral,
// alpaca, none, whose markers are text).
std::vector<std::string> marker_tokens(ChatTemplate t);

// One piece of a rendered record: text, or the tokenizer's BOS/EOS inserted as an id (never as "<s>" text, whose
// spelling differs between vocabularies and which a vocabulary without it as a special token splits into characters).
struct TemplatePiece {
  enum class Kind { Text, Bos, Eos };
  Kind kind = Kind::Text;
  std::string text;
  bool response = false;  // an assistant's reply or the EOS that ends it: trained even when the prompt is masked
  // Text after an EOS that the template's reference tokenizes as the start of a text (SentencePiece's dummy prefix):
  // Mistral's "</s> [INST]" (mistral-common's v1 tokenizer, and transformers' on Mistral's own tokenizer).
  bool starts_text = false;
};

// The record rendered with the template. `for_generation`: without the final assistant reply (a record may then
// end with a user turn), ending where the reply starts. Text records render as BOS + text + EOS, all "response".
// A conversation that the template cannot render (no turns, not ending with an assistant turn when training,
// unknown roles, turns not alternating, a system message where the template refuses one) is an error naming
// record.source.
std::vector<TemplatePiece> render_pieces(const Record& r, const ChatFormat& t, bool for_generation = false);
// The same pieces joined as one string with "<s>"/"</s>" for BOS/EOS: for showing and testing the templates.
std::string render_text(const Record& r, const ChatFormat& t, bool for_generation = false);

struct TokenizedSample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // aligned with input_ids (HF convention: position t's label is input_ids[t] or -100)
  bool truncated = false;       // longer than max_seq_len: cut, keeping the start
  int8_t desirable = -1;        // a KTO record's label (1 desirable, 0 undesirable); -1: none
};

constexpr int64_t kIgnoreLabel = -100;

// Exactly one BOS at the start (llama2 multi-turn: one per turn, each after the previous turn's EOS, as Meta's
// reference), an EOS after every assistant reply (trained: its label is the EOS id), prompt tokens labelled -100
// unless train_on_prompt. Text records: BOS + text + EOS, all trained. Cut to max_seq_len (keeping the start).
TokenizedSample tokenize_record(const Record& r, const ChatFormat& t, const Tokenizer& tok, bool train_on_prompt,
                                int64_t max_seq_len);

// The prompt as generation sees it: all turns but the final assistant reply, ending where that reply starts.
// A prefix of tokenize_record's input_ids (before any truncation) unless a token spans the prompt/response boundary.
std::vector<int64_t> prompt_ids(const Record& r, const ChatFormat& t, const Tokenizer& tok);

struct TokenizedDataset {
  std::vector<TokenizedSample> samples;
  int64_t truncated = 0;  // samples cut to max_seq_len
  int64_t dropped = 0;    // samples left with nothing to train on after the cut (prompt longer than max_seq_len)
};

// tokenize_record over all records; samples without a single trained label after truncation are dropped (and
// counted), since they would only add padding and a batch of them has no loss.
TokenizedDataset tokenize_records(const std::vector<Record>& records, const ChatFormat& t, const Tokenizer& tok,
                                  bool train_on_prompt, int64_t max_seq_len);

// The token that ends an assistant turn in `format`, where it is a token of `tok`: the named template's marker, or
// for a Jinja template the token its rendered reply ends with (found by rendering a probe conversation: the longest
// token of the vocabulary that the text after the reply begins with). nullopt: the turn ends with EOS, or the
// marker is text. Generation stops there, as the peers' stop strings do.
std::optional<int64_t> end_of_turn_id(const ChatFormat& format, const Tokenizer& tok);

}  // namespace qtune::data
