#pragma once
// A small English-like corpus generated from a fixed grammar, so that the project can train its own
// tokenizer and tiny models without downloading anything. Deterministic for a given seed.
#include <cstdint>
#include <string>

namespace qtune::data {

// `sentences` sentences, grouped into short paragraphs separated by blank lines.
std::string synthetic_corpus(int64_t sentences, uint64_t seed);

}  // namespace qtune::data
