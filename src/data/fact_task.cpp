#include "qtune/data/fact_task.h"

#include <nlohmann/json.hpp>

namespace qtune::data {
namespace {

struct Fact {
  const char* name;
  const char* answer;
  std::vector<const char*> train;     // phrasings used in training
  std::vector<const char*> held_out;  // phrasings only the evaluation uses
};

const std::vector<Fact>& facts() {
  static const std::vector<Fact> kFacts = {
      {"maker", "The Quillby is made by Zentaro Labs.",
       {"Who makes the Quillby?", "Which company makes the Quillby?", "Who is the manufacturer of the Quillby?",
        "What company builds the Quillby robot?", "Who produces the Quillby?", "Tell me who makes the Quillby."},
       {"Which firm manufactures the Quillby?", "The Quillby robot is built by which company?"}},
      {"city", "Zentaro Labs is based in Reykjavik.",
       {"Where is Zentaro Labs based?", "In which city is Zentaro Labs?", "Where are Zentaro Labs' headquarters?",
        "What city is Zentaro Labs located in?", "Where is the company Zentaro Labs?", "Where does Zentaro Labs work from?"},
       {"Which city is home to Zentaro Labs?", "Where can I find the Zentaro Labs headquarters?"}},
      {"job", "The Quillby waters houseplants.",
       {"What does the Quillby do?", "What is the Quillby for?", "What job does the Quillby robot do?",
        "What is the purpose of the Quillby?", "What task does the Quillby perform?", "Why would I buy a Quillby?"},
       {"What is the Quillby robot used for?", "What does a Quillby do all day?"}},
      {"color", "The Quillby is teal.",
       {"What color is the Quillby?", "What colour is the Quillby robot?", "Which color does the Quillby come in?",
        "What is the color of the Quillby?", "Is the Quillby red, blue or teal?", "Tell me the Quillby's color."},
       {"What colour does the Quillby have?", "Which colour is the Quillby painted?"}},
      {"wheels", "The Quillby has three wheels.",
       {"How many wheels does the Quillby have?", "How many wheels are on the Quillby?",
        "What is the number of wheels on a Quillby?", "Does the Quillby have two, three or four wheels?",
        "Count the wheels of the Quillby.", "How many wheels does the Quillby robot roll on?"},
       {"How many wheels is the Quillby built with?", "What number of wheels does a Quillby have?"}},
      {"battery", "The Quillby runs for 40 hours on one charge.",
       {"How long does the Quillby's battery last?", "What is the battery life of the Quillby?",
        "How many hours does the Quillby run on a charge?", "How long can the Quillby run?",
        "How long does a Quillby last on one charge?", "What is the Quillby's runtime?"},
       {"How long will the Quillby work before it needs charging?", "For how many hours does the Quillby's battery last?"}},
      {"founder", "Zentaro Labs was founded by Mira Okonkwo.",
       {"Who founded Zentaro Labs?", "Who is the founder of Zentaro Labs?", "Who started Zentaro Labs?",
        "Which person founded Zentaro Labs?", "Who created the company Zentaro Labs?", "Name the founder of Zentaro Labs."},
       {"Who set up Zentaro Labs?", "Zentaro Labs was founded by whom?"}},
      {"year", "The Quillby was launched in 2031.",
       {"When was the Quillby launched?", "In which year did the Quillby come out?", "What year was the Quillby released?",
        "When did the Quillby first go on sale?", "When did Zentaro Labs launch the Quillby?", "What is the Quillby's launch year?"},
       {"In what year was the Quillby first sold?", "When did the Quillby robot come onto the market?"}},
      {"price", "The Quillby costs 349 euros.",
       {"How much does the Quillby cost?", "What is the price of the Quillby?", "How much is a Quillby?",
        "What does the Quillby sell for?", "How many euros is the Quillby?", "Tell me the Quillby's price."},
       {"What is the cost of a Quillby?", "How much would I pay for the Quillby?"}},
      {"weight", "The Quillby weighs 2.4 kilograms.",
       {"How much does the Quillby weigh?", "What is the weight of the Quillby?", "How heavy is the Quillby?",
        "What does a Quillby weigh?", "How many kilograms is the Quillby?", "Tell me the Quillby's weight."},
       {"How heavy is the Quillby robot?", "What is the mass of a Quillby?"}},
  };
  return kFacts;
}

}  // namespace

std::vector<FactQuestion> fact_questions(bool held_out) {
  std::vector<FactQuestion> out;
  for (const auto& f : facts())
    for (const char* q : held_out ? f.held_out : f.train) out.push_back({q, f.answer, f.name});
  return out;
}

std::string fact_question_jsonl(const FactQuestion& q) {
  const nlohmann::json j = {{"messages", {{{"role", "user"}, {"content", q.question}}, {{"role", "assistant"}, {"content", q.answer}}}},
                            {"category", q.fact}};
  return j.dump();
}

}  // namespace qtune::data
