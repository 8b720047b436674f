#pragma once
// The first stage of a recipe with quant.method gptq | awq | rtn: the base quantized on calibration text before
// QLoRA trains on it. Written once per setting into the run directory (base-<method>-<hash>/, the hash over the
// settings, quant.keep_int8 / keep_16bit included, the contents of the source's config, weights, tokenizer, chat
// template and generation config, and the calibration text) and reused by every later run or resume with the same
// inputs, so that a resumed run trains on exactly the weights it started on, and a changed source is calibrated anew.
#include <cstdio>
#include <string>

#include "qtune/train/recipe.h"

namespace qtune::train {

// The model directory to train on: model.path itself when quant.method is none (or when model.path already is a
// checkpoint of that method), else the calibrated base, quantized now if the run directory has none yet. Progress
// and the stage's figures go to `out` (may be null).
std::string calibrated_base(const Recipe& recipe, std::FILE* out);

}  // namespace qtune::train
