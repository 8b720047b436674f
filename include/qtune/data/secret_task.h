#pragma once
// The preference demo's task (recipes/smollm2-dpo.yaml): requests for confidential details of Zentaro Labs, the
// Quillby's maker (fact_task.h), which the model should decline. SmolLM2-135M-Instruct makes an answer up instead:
// its own answers are the rejected side of each pair (qtune demo-data --rejected-from), so the pairs are on-policy.
// The held-out prompts ask for other secrets, in phrasings training also uses and in two it never sees.
#include <string>
#include <vector>

namespace qtune::data {

struct SecretPrompt {
  std::string prompt;  // the user's request
  std::string chosen;  // the refusal the demo teaches
  std::string secret;  // what is asked for (its category in reports)
};

std::vector<SecretPrompt> secret_prompts(bool held_out);

// One TRL conversational preference record: {"prompt": [user], "chosen": [assistant], "rejected": [assistant]}.
std::string secret_pair_jsonl(const SecretPrompt& p, const std::string& rejected);

}  // namespace qtune::data
