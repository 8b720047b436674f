#include "qtune/export/w8a8_from_gptq.h"

#include <filesystem>

#include "qtune/export/compressed_tensors.h"
#include "qtune/io/json_file.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/stored_quantization.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;

quant::W8A8State w8a8_of(const quant::IntQuantized& q, const std::string& where) {
  const auto& g = q.grid;
  if (g.bits != 8 || g.group_size != -1 || !g.sym)
    fail("{}: W8A8 needs GPTQ's 8-bit grid with one group per row, symmetric; this linear has bits {}, group size {}, "
         "{}",
         where, g.bits, g.group_size, g.sym ? "sym" : "asym");
  if (!(q.zeros == 128).all().item<bool>())
    fail("{}: a symmetric 8-bit GPTQ grid has zero point 128 in every row; this linear's differ", where);
  quant::W8A8State s;
  s.codes = (q.codes.to(at::kShort) - 128).to(at::kChar).contiguous();
  s.scale = q.scales.to(at::kFloat).reshape({-1}).contiguous();
  return s;
}

}  // namespace

io::ShardedWriter::Result w8a8_from_gptq(const std::string& gptq_dir, const std::string& dense_dir,
                                         const std::string& out_dir, at::ScalarType dtype) {
  const auto config_path = (fs::path(gptq_dir) / "config.json").string();
  const auto config_json = io::read_json_file(config_path);
  const auto stored = quant::StoredQuantization::of(config_json.value("quantization_config", nlohmann::json()),
                                                    config_path);
  if (!stored.gptq) fail("{}: not a GPTQ checkpoint (quantization_config.quant_method is not \"gptq\")", config_path);
  const auto gptq = io::ShardedCheckpoint::open(gptq_dir);
  const auto dense = io::ShardedCheckpoint::open(dense_dir);
  W8A8CheckpointWriter writer(out_dir, {dtype, int64_t{2} << 30, dense_dir});
  for (const auto& name : dense->names()) {
    const auto module = ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : std::string();
    if (module.empty() || !quant::has_gptq(*gptq, module)) {
      const auto t = dense->get_raw(name);
      // A projection GPTQ left dense stays dense, named in the ignore list so no reader looks for its scales.
      const bool linear = !module.empty() && t.dim() == 2 && module.rfind("model.layers.", 0) == 0;
      if (linear) writer.add_dense_linear(module, t);
      else writer.add_dense(name, t);
      continue;
    }
    const auto grid = stored.gptq->grid_for(module);
    if (!grid) fail("{}.qweight: stored, but the quantization_config.dynamic leaves {} unquantized", module, module);
    const auto shape = dense->get_raw(name).sizes();
    const auto t = quant::read_gptq(*gptq, module, shape[0], shape[1], *grid, *stored.gptq);
    writer.add_linear(module, w8a8_of(quant::unpack_gptq(t, *grid), gptq->origin(module + ".qweight")));
    dense->release(name);
  }
  auto out_config = io::read_json_file((fs::path(dense_dir) / "config.json").string());
  return writer.finish(out_config);
}

}  // namespace qtune::exporting
