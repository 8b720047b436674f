#include "qtune/io/model_weights.h"

#include "qtune/io/gguf_model.h"
#include "qtune/io/sharded_checkpoint.h"

namespace qtune::io {

std::shared_ptr<WeightSource> open_model_weights(const std::string& path) {
  if (is_gguf_path(path)) return std::make_shared<GgufWeights>(GgufFile::open(path));
  return ShardedCheckpoint::open(path);
}

}  // namespace qtune::io
