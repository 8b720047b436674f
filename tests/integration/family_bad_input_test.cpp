// A family's GGUF whose metadata gives another head size than its tensors: an error naming the file and the keys to
// check, before any model is built, never a crash or a model of the wrong shape (the same for a config.json:
// OracleFamilies.AConfigContradictingTheWeightsNamesTheFileAndKey).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "qtune/data/tokenizer.h"
#include "qtune/export/gguf_export.h"
#include "qtune/export/gguf_vocab.h"
#include "qtune/io/atomic_file.h"
#include "qtune/nn/model_io.h"
#include "test_util.h"
#include "tiny_families.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

// ARCH.attention.key_length (with value_length and
// rope.dimension_count, which must agree with it) rewritten in place (Qwen3's 24 to 16, Phi-3's 16 to 8).
// Phi-3's fused attn_qkv is named with its k and v rows.
TEST(FamilyBadInput, AGgufWhoseKeyLengthIsNotItsTensorsNamesTheFileAndTheKey) {
  for (const std::string name : {"qwen3", "phi3"}) {
    SCOPED_TRACE(name);
    const int stored = name == "qwen3" ? 24 : 16;
    auto keys = tiny_families().at(name);
    keys.erase("sliding_window");
    TinyRun t(keys, name);
    const auto path = t.dir + "/model.gguf";
    {
      auto model = nn::load_causal_lm(t.model, at::TensorOptions().dtype(at::kFloat));
      const auto tok = data::Tokenizer::load(t.model);
      exporting::GgufExportOptions o;
      o.type = "f32";
      exporting::save_gguf_model(*model, exporting::gguf_vocab_metadata(t.model, tok, model->config().vocab_size),
                                 path, o);
    }
    ASSERT_NO_THROW(nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat)));
    // Each key, its type (u32) and its value as gguf writes them; the patch keeps every offset.
    auto bytes = test::read_file(path);
    for (const std::string what : {"attention.key_length", "attention.value_length", "rope.dimension_count"}) {
      const std::string key = name + "." + what;
      const std::string entry = std::string(1, char(key.size())) + std::string(7, '\0') + key + std::string("\x04\0\0\0", 4);
      const auto at = bytes.find(entry + std::string(1, char(stored)) + std::string(3, '\0'));
      ASSERT_NE(at, std::string::npos) << key << " = " << stored << " is not in the file";
      bytes[at + entry.size()] = char(stored == 24 ? 16 : 8);
    }
    io::write_text_atomically(path, bytes);

    const auto msg = test::error_of([&] { nn::load_causal_lm(path, at::TensorOptions().dtype(at::kFloat)); });
    const std::string expected =
        name == "qwen3"
            ? path + ": qwen3.attention.head_count (4) x qwen3.attention.key_length (16) = 64 rows, but tensor "
                     "'blk.0.attn_q.weight' has 96"
            : path + ": phi3.attention.head_count (4) x phi3.attention.key_length (8) = 32 (+ 2 x 16 for k and v) "
                     "rows, but tensor 'blk.0.attn_qkv.weight' has 128";
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace qtune::train
