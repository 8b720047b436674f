#include "qtune/data/demo_task.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>

namespace qtune::data {
namespace {

const std::vector<std::string> kNames = {"Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam"};
const std::vector<std::string> kAdjectives = {"little", "big", "red", "happy", "small", "blue", "old", "shiny", "green"};
const std::vector<std::string> kNouns = {"cat", "dog", "ball", "tree", "bird", "box", "car", "hat", "fish", "cake"};
const std::vector<std::string> kPlaces = {"park", "garden", "house", "school", "river", "forest", "shop", "hill", "beach"};
// Past tense, and the form a question takes ("What did Tom see?").
const std::vector<std::pair<std::string, std::string>> kVerbs = {
    {"saw", "see"}, {"found", "find"}, {"liked", "like"}, {"wanted", "want"}, {"made", "make"}, {"took", "take"}};
const std::vector<std::string> kFeelings = {"happy", "sad", "tired", "excited", "surprised", "proud", "scared"};

using Rng = std::mt19937_64;

template <typename T>
const T& pick(const std::vector<T>& v, Rng& rng) {
  return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}
int number(Rng& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// One fact about `name`: the sentence that states it, the question about it, the answer (the end of the sentence,
// "went to the forest.", "a red ball.", or for counts the sum), and the recall a later sentence of a story makes of it.
struct Fact {
  DemoQuestion q;
  std::string recall;
};

Fact fact(const std::string& name, int kind, Rng& rng) {
  switch (kind) {
    case 0: {
      const auto& place = pick(kPlaces, rng);
      return {{"One day, " + name + " went to the " + place + ".", "Where did " + name + " go?",
               "went to the " + place + ".", "where"},
              name + " liked the " + place + " very much."};
    }
    case 1: {
      const auto& f = pick(kFeelings, rng);
      return {{name + " was very " + f + ".", "How did " + name + " feel?", "was very " + f + ".", "feeling"},
              "Later, " + name + " was very " + f + " again."};
    }
    case 2: {
      const auto& verb = pick(kVerbs, rng);
      const auto thing = "a " + pick(kAdjectives, rng) + " " + pick(kNouns, rng);
      return {{name + " " + verb.first + " " + thing + ".", "What did " + name + " " + verb.second + "?",
               thing + ".", "what"},
              name + " was glad to have " + thing + "."};
    }
    default: {
      const int a = number(rng, 1, 5), b = number(rng, 1, 4);
      const auto& noun = pick(kNouns, rng);
      const auto sum = std::to_string(a + b);
      return {{name + " had " + std::to_string(a) + " " + noun + "s and found " + std::to_string(b) + " more.",
               "How many " + noun + "s did " + name + " have then?", sum, "count"},
              "So " + name + " had " + sum + " " + noun + "s."};
    }
  }
}

}  // namespace

std::string demo_pretrain_corpus(int64_t stories, uint64_t seed) {
  Rng rng(seed);
  std::string out;
  for (int64_t s = 0; s < stories; ++s) {
    std::vector<std::string> names = kNames;
    std::shuffle(names.begin(), names.end(), rng);
    // Facts of different kinds, as in the questions' contexts, so a recall has one fact of its kind to look back to.
    std::vector<int> kinds = {0, 1, 2, 3};
    std::shuffle(kinds.begin(), kinds.end(), rng);
    const int people = number(rng, 2, 4);
    std::vector<Fact> facts;
    std::string story;
    for (int k = 0; k < people; ++k) {
      facts.push_back(fact(names[k], kinds[k], rng));
      story += (k ? " " : "") + facts.back().q.context;
    }
    std::vector<int> order(people);
    for (int k = 0; k < people; ++k) order[k] = k;
    std::shuffle(order.begin(), order.end(), rng);
    // The bound is drawn afresh before each recall, so later recalls are less likely: most stories recall one or two
    // facts. (The demo's figures in README.md come from this exact corpus; changing the draws changes them.)
    for (int k = 0; k < number(rng, 1, people); ++k) story += " " + facts[order[k]].recall;
    // Some stories are told twice: verbatim repetition is what makes small models learn to copy from their context.
    if (number(rng, 0, 3) == 0) story += " The next day, the same thing happened. " + story;
    out += story + "\n\n";
  }
  return out;
}

std::vector<DemoQuestion> demo_questions(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<DemoQuestion> out;
  for (int64_t i = 0; i < n; ++i) {
    // Two to four facts of different kinds about different children; the question picks one of them. (Kinds do not
    // repeat within a context: telling two "went to" sentences apart by name alone is beyond a model this small.)
    std::vector<std::string> names = kNames;
    std::shuffle(names.begin(), names.end(), rng);
    std::vector<int> kinds = {0, 1, 2, 3};
    std::shuffle(kinds.begin(), kinds.end(), rng);
    const int facts = number(rng, 2, 4), asked = number(rng, 0, facts - 1);
    DemoQuestion q;
    std::string context;
    for (int k = 0; k < facts; ++k) {
      auto f = fact(names[k], kinds[k], rng).q;
      context += (k ? " " : "") + f.context;
      if (k == asked) q = f;
    }
    q.context = context;
    out.push_back(q);
  }
  return out;
}

std::string demo_question_jsonl(const DemoQuestion& q) {
  nlohmann::ordered_json j;
  j["instruction"] = "Context: " + q.context + "\nQuestion: " + q.question;
  j["output"] = q.answer;
  j["category"] = q.kind;
  return j.dump();
}

}  // namespace qtune::data
