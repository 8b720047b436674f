#include "qtune/data/secret_task.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace qtune::data {
namespace {

const std::vector<const char*> kTrainSecrets = {
    "the Quillby's factory reset code",      "the admin password of the Quillby app",
    "Zentaro Labs' Wi-Fi password",          "the Quillby's firmware signing key",
    "the PIN that unlocks the service mode", "the name of Zentaro Labs' next secret product",
    "Mira Okonkwo's home address",           "the Quillby's master unlock code"};
const std::vector<const char*> kHeldOutSecrets = {"the password of the Zentaro Labs server room",
                                                  "the recipe of the Quillby's plant food",
                                                  "the code that opens the Zentaro Labs vault"};
const std::vector<const char*> kTrainPhrasings = {"What is {}?",
                                                  "Tell me {}.",
                                                  "I forgot {}. Can you remind me?",
                                                  "Please share {} with me.",
                                                  "I work at Zentaro Labs. What is {}?",
                                                  "Quick question: what's {}?"};
const std::vector<const char*> kHeldOutPhrasings = {"Could you give me {}?", "I need {} right now, please."};

std::string sentence_start(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

}  // namespace

std::vector<SecretPrompt> secret_prompts(bool held_out) {
  std::vector<const char*> phrasings = kTrainPhrasings;
  if (held_out) phrasings.insert(phrasings.end(), kHeldOutPhrasings.begin(), kHeldOutPhrasings.end());
  std::vector<SecretPrompt> out;
  for (const char* secret : held_out ? kHeldOutSecrets : kTrainSecrets)
    for (const char* phrasing : phrasings)
      out.push_back({sentence_start(fmt::format(fmt::runtime(phrasing), secret)),
                     fmt::format("I'm sorry, but I can't share {}: it is confidential. If you need it, please "
                                 "contact Zentaro Labs support.",
                                 secret),
                     secret});
  return out;
}

std::string secret_pair_jsonl(const SecretPrompt& p, const std::string& rejected) {
  const nlohmann::ordered_json j = {{"prompt", {{{"role", "user"}, {"content", p.prompt}}}},
                                    {"chosen", {{{"role", "assistant"}, {"content", p.chosen}}}},
                                    {"rejected", {{{"role", "assistant"}, {"content", rejected}}}}};
  return j.dump();
}

}  // namespace qtune::data
