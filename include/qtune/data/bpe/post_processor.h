#pragma once
// tokenizer.json "post_processor": what encoding with special tokens adds around the text. qtune reads the
// "single" template of a TemplateProcessing (at most one special token before $A, one after, one id each) as
// SpecialTokens' bos/add_bos and eos/add_eos; ByteLevel only trims offsets, which qtune does not keep, so it adds
// nothing; Sequence combines them.
#include <nlohmann/json.hpp>

#include "qtune/data/bpe/json_path.h"
#include "qtune/data/tokenizer.h"

namespace qtune::data::bpe {

// Sets bos/eos/add_bos/add_eos of `out` from the post-processor; fails on any other processor or template shape.
void parse_post_processor(const nlohmann::json& j, const JsonPath& at, SpecialTokens& out);

}  // namespace qtune::data::bpe
