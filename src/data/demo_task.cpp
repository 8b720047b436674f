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

// One fact about `name`, as a sentence, with the question it answers.
DemoQuestion fact(const std::string& name, int kind, Rng& rng) {
  DemoQuestion q;
  switch (kind) {
    case 0: {
      const auto& place = pick(kPlaces, rng);
      q = {"One day, " + name + " went to the " + place + ".", "Where did " + name + " go?", "the " + place, "where"};
      break;
    }
    case 1: {
      const auto& f = pick(kFeelings, rng);
      q = {name + " was very " + f + ".", "How did " + name + " feel?", f, "feeling"};
      break;
    }
    case 2: {
      const auto& verb = pick(kVerbs, rng);
      const auto thing = "a " + pick(kAdjectives, rng) + " " + pick(kNouns, rng);
      q = {name + " " + verb.first + " " + thing + ".", "What did " + name + " " + verb.second + "?", thing, "what"};
      break;
    }
    default: {
      const int a = number(rng, 1, 5), b = number(rng, 1, 4);
      const auto& noun = pick(kNouns, rng);
      q = {name + " had " + std::to_string(a) + " " + noun + "s and found " + std::to_string(b) + " more.",
           "How many " + noun + "s did " + name + " have then?", std::to_string(a + b), "count"};
    }
  }
  return q;
}

}  // namespace

std::string demo_pretrain_corpus(int64_t stories, uint64_t seed) {
  Rng rng(seed);
  std::string out;
  for (int64_t s = 0; s < stories; ++s) {
    const int sentences = number(rng, 3, 6);
    for (int i = 0; i < sentences; ++i) {
      const auto& name = pick(kNames, rng);
      const int kind = number(rng, 0, 4);
      if (kind == 4) {  // the count facts, with their sum stated the way stories do
        const int a = number(rng, 1, 5), b = number(rng, 1, 4);
        const auto& noun = pick(kNouns, rng);
        out += name + " had " + std::to_string(a) + " " + noun + "s and found " + std::to_string(b) + " more, so " + name +
               " had " + std::to_string(a + b) + " " + noun + "s.";
      } else if (kind == 3) {
        out += "The " + pick(kAdjectives, rng) + " " + pick(kNouns, rng) + " was in the " + pick(kPlaces, rng) + ".";
      } else {
        out += fact(name, kind, rng).context;
      }
      out += i + 1 < sentences ? " " : "\n\n";
    }
  }
  return out;
}

std::vector<DemoQuestion> demo_questions(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<DemoQuestion> out;
  for (int64_t i = 0; i < n; ++i) {
    // Two to four facts about different children; the question picks one of them.
    std::vector<std::string> names = kNames;
    std::shuffle(names.begin(), names.end(), rng);
    const int facts = number(rng, 2, 4), asked = number(rng, 0, facts - 1);
    DemoQuestion q;
    std::string context;
    for (int k = 0; k < facts; ++k) {
      auto f = fact(names[k], number(rng, 0, 3), rng);
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
