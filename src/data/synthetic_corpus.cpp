#include "qtune/data/synthetic_corpus.h"

#include <random>
#include <vector>

namespace qtune::data {
namespace {

const std::vector<std::string> kNames = {"Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo"};
const std::vector<std::string> kAdjectives = {"little", "big", "red", "happy", "small", "blue", "old", "shiny", "kind", "green"};
const std::vector<std::string> kNouns = {"cat", "dog", "ball", "tree", "bird", "box", "car", "hat", "fish", "cake"};
const std::vector<std::string> kPlaces = {"park", "garden", "house", "school", "river", "forest", "shop", "hill"};
const std::vector<std::string> kVerbs = {"saw", "found", "liked", "wanted", "had", "made", "took", "gave away"};
const std::vector<std::string> kFeelings = {"happy", "sad", "tired", "excited", "surprised", "proud"};

template <typename Rng>
const std::string& pick(const std::vector<std::string>& words, Rng& rng) {
  return words[std::uniform_int_distribution<size_t>(0, words.size() - 1)(rng)];
}

}  // namespace

std::string synthetic_corpus(int64_t sentences, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out;
  for (int64_t i = 0; i < sentences; ++i) {
    const auto& name = pick(kNames, rng);
    switch (std::uniform_int_distribution<int>(0, 4)(rng)) {
      case 0: out += name + " " + pick(kVerbs, rng) + " a " + pick(kAdjectives, rng) + " " + pick(kNouns, rng) + "."; break;
      case 1: out += "One day, " + name + " went to the " + pick(kPlaces, rng) + "."; break;
      case 2: out += name + " was very " + pick(kFeelings, rng) + "."; break;
      case 3: out += "The " + pick(kAdjectives, rng) + " " + pick(kNouns, rng) + " was in the " + pick(kPlaces, rng) + "."; break;
      default: {
        const int a = std::uniform_int_distribution<int>(1, 9)(rng), b = std::uniform_int_distribution<int>(1, 9)(rng);
        out += name + " had " + std::to_string(a) + " " + pick(kNouns, rng) + "s and found " + std::to_string(b) +
               " more, so now " + name + " had " + std::to_string(a + b) + ".";
      }
    }
    out += (i % 5 == 4) ? "\n\n" : " ";
  }
  return out;
}

}  // namespace qtune::data
