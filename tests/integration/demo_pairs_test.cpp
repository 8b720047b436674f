// qtune demo-data --rejected-from MODEL: the preference demo's pairs, each secret request with the refusal chosen and
// the model's own greedy answer rejected (what `qtune generate --chat` answers), in TRL's conversational format.
#include <gtest/gtest.h>

#include "qtune/data/preference.h"
#include "qtune/data/secret_task.h"
#include "test_util.h"

namespace qtune::data {
namespace {

// stories260K, a real (tiny) pretrained model: a random one answers with blanks, which give no pair.
TEST(DemoPairs, RejectedIsTheModelsOwnAnswerAndChosenTheRefusal) {
  QTUNE_REQUIRE_SHARED();
  const auto model = test::shared_dir() + "/models/stories260K";
  const auto out = test::temp_dir() + "/demo";
  const auto r = test::run_qtune("demo-data " + out + " --stories 20 --train-questions 2 --eval-questions 2 " +
                                 "--rejected-from " + model + " --template chatml --max-new-tokens 6");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const bool held_out : {false, true}) {
    const auto file = out + (held_out ? "/secret_pref_eval.jsonl" : "/secret_pref_train.jsonl");
    EXPECT_NE(r.out.find(file), std::string::npos) << r.out;
    const auto records = read_preference_records(file);
    const auto prompts = secret_prompts(held_out);
    // An answer that is empty (the model ends at once) is skipped, and said so; nearly all pairs remain.
    ASSERT_GE(records.size() + 3, prompts.size());
    ASSERT_LE(records.size(), prompts.size());
    for (const auto& p : records) {
      ASSERT_TRUE(p.conversational);
      ASSERT_EQ(p.prompt_messages.size(), 1u);
      EXPECT_EQ(p.prompt_messages[0].role, "user");
      EXPECT_NE(p.chosen_messages.at(0).content.find("I'm sorry, but I can't share"), std::string::npos);
      EXPECT_NE(p.rejected_messages.at(0).content, p.chosen_messages[0].content);
    }
    // The held-out requests ask for secrets training never names.
    if (held_out)
      for (const auto& p : records)
        for (const auto& q : secret_prompts(false)) EXPECT_EQ(p.prompt_messages[0].content.find(q.secret), std::string::npos);
  }
  // The rejected answer is what the model says: generate --chat with the same template and length.
  const auto first = read_preference_records(out + "/secret_pref_train.jsonl").at(0);
  const auto g = test::run_qtune("generate " + model + " --template chatml -n 6  --chat \"" +
                                 first.prompt_messages[0].content + "\"");
  ASSERT_EQ(g.code, 0) << g.err;
  auto said = g.out;
  said.erase(said.find_last_not_of(" \t\n") + 1);
  EXPECT_EQ(said, first.rejected_messages[0].content);
}

}  // namespace
}  // namespace qtune::data
