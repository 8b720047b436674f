#pragma once
// Preference data in TRL's formats, detected from each record's keys as TRL detects them:
//   {"prompt", "chosen", "rejected"}  as strings (plain) or as message lists (conversational);
//   {"chosen", "rejected"}            the implicit prompt: both hold the whole text or conversation, and the prompt is
//                                     their longest common prefix of characters (plain) or messages (TRL's
//                                     extract_prompt);
//   {"prompt", "completion", "label"} KTO's unpaired records: one answer, labelled desirable (true) or not (false).
// Tokenized as TRL 1.16's DPOTrainer does: plain text is prompt + completion + EOS, a conversation goes through the
// model's chat template (the prompt with the assistant's header, the whole with the reply); the shared prompt is where
// the prompt's tokens and both prompt + completion's stop agreeing, so a token merged across the boundary belongs to
// the completion, and only completion tokens are trained.
#include <cstdint>
#include <string>
#include <vector>

#include "qtune/data/chat_template.h"
#include "qtune/data/records.h"
#include "qtune/data/tokenizer.h"

namespace qtune::data {

struct PreferenceRecord {
  bool conversational = false;
  std::string prompt, chosen, rejected;            // plain
  std::vector<Message> prompt_messages, chosen_messages, rejected_messages;  // conversational
  std::string source;                              // "file:line"
};

// Every record of a .jsonl file; blank lines are skipped. Errors name the file, the line and the key: malformed JSON,
// no "chosen"/"rejected", mixed plain and conversational values, an empty completion, chosen equal to rejected.
std::vector<PreferenceRecord> read_preference_records(const std::string& path);

// One pair as token ids: the prompt once, and each completion after it.
struct PreferencePair {
  std::vector<int64_t> prompt, chosen, rejected;
  std::string source;
};

struct PreferenceLimits {
  int64_t max_prompt_length = 0;  // > 0: a longer prompt keeps its last tokens
  int64_t max_length = 0;         // > 0: prompt + completion longer than this is cut (keep_end: its start goes)
  bool keep_end = false;
};

// The record tokenized; an error naming record.source when its prompt alone fills max_length with keep_start (TRL
// drops it silently: nothing of the completion would be trained).
PreferencePair tokenize_preference(const PreferenceRecord& record, const ChatFormat& format, const Tokenizer& tok,
                                   const PreferenceLimits& limits);

// One KTO record: a prompt, a completion and its label.
struct KtoRecord {
  bool conversational = false;
  bool desirable = false;  // "label"
  std::string prompt, completion;                                // plain
  std::vector<Message> prompt_messages, completion_messages;     // conversational
  std::string source;                                            // "file:line"
};

// Every record of a KTO .jsonl file. A file of pairs (its first record has "chosen") is unpaired as TRL's KTOTrainer
// does it: each pair's chosen desirable, its rejected not. Errors name the file, the line and the key: malformed JSON,
// no "prompt", no or an empty "completion", a "label" that is not true/false, a pair among KTO records, and, naming
// the file, a set whose records all carry the same label (KTO weighs the desirable against the undesirable).
std::vector<KtoRecord> read_kto_records(const std::string& path);
// Pairs as KTO records in TRL's order (unpair_preference_dataset): per 1000 pairs, their chosen, then their rejected.
std::vector<KtoRecord> unpair(const std::vector<PreferenceRecord>& pairs);

// A KTO record as token ids, tokenized as a DPO pair's side is: the prompt, then the completion after it.
struct KtoExample {
  std::vector<int64_t> prompt, completion;
  bool desirable = false;
  std::string source;
};
KtoExample tokenize_kto(const KtoRecord& record, const ChatFormat& format, const Tokenizer& tok,
                        const PreferenceLimits& limits);
// The row it trains on: prompt + completion cut to max_length, labels -100 on the prompt, its label carried along.
TokenizedSample kto_row(const KtoExample& example, const PreferenceLimits& limits);

// KTO's mismatched pairs, from which it estimates the KL term (TRL's KL_completion_ids): each row's prompt with the
// previous row's completion, the first row's with the last's ("rotated by one within the batch"), cut to max_length
// keeping the start as TRL's collator does. The prompt of a row is where its labels start (kto_row's layout).
std::vector<TokenizedSample> mismatched_rows(const std::vector<const TokenizedSample*>& rows, int64_t max_length);

// The two rows a pair trains on, chosen then rejected: prompt + completion cut to max_length, labels -100 on the
// prompt (TRL's collator: the completion mask).
std::pair<TokenizedSample, TokenizedSample> preference_rows(const PreferencePair& pair, const PreferenceLimits& limits);

}  // namespace qtune::data
