// qtune convert MODEL.gguf --out DIR: a GGUF as a Hugging Face model directory (transformers and PEFT load it).
#include <fmt/format.h>

#include <filesystem>

#include "commands.h"
#include "qtune/data/gguf_tokenizer.h"
#include "qtune/export/gguf_to_hf.h"
#include "qtune/io/gguf.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"
#include "qtune/util/strings.h"

namespace qtune::cli {
namespace {

struct ConvertArgs {
  std::string gguf, out, dtype = "fp32";
  bool tokenizer_only = false;
};

int run_convert(const ConvertArgs& a) {
  if (!ends_with(a.gguf, ".gguf")) fail("{}: qtune convert reads a .gguf file", a.gguf);
  if (a.tokenizer_only) {
    if (std::filesystem::exists(a.out)) fail("--out {}: exists; choose a new directory (nothing was overwritten)", a.out);
    const auto tmp = a.out + ".tmp";
    remove_tree(tmp);
    std::filesystem::create_directories(tmp);
    data::save_tokenizer_files(data::gguf_tokenizer(*io::GgufFile::open(a.gguf)), tmp);
    std::filesystem::rename(tmp, a.out);
    fmt::print("wrote {}: the tokenizer files (tokenizer_config.json with the chat template)\n", a.out);
    return 0;
  }
  const auto dtype = a.dtype == "bf16" ? at::kBFloat16 : a.dtype == "fp16" ? at::kHalf : at::kFloat;
  const auto r = exporting::convert_gguf_to_hf(a.gguf, a.out, dtype);
  fmt::print("wrote {}: {} tensors in {} shard(s), {:.1f} MiB of {} weights; config.json, generation_config.json, "
             "tokenizer files\n",
             a.out, r.tensors, r.shards, r.bytes / 1048576.0, a.dtype);
  return 0;
}

}  // namespace

void add_convert(CLI::App& app, Action& action) {
  auto args = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand("convert", "Write a GGUF model as a Hugging Face directory (safetensors, config, tokenizer)");
  cmd->add_option("MODEL", args->gguf, "A .gguf file (llama, mistral, qwen2, qwen3, gemma2, gemma3 or phi3)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out,-o", args->out, "Directory to create (must not exist)")->required();
  cmd->add_option("--dtype", args->dtype, "Weights as fp32 | bf16 | fp16")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_flag("--tokenizer-only", args->tokenizer_only, "Write only the tokenizer files");
  cmd->callback([&action, args] { action = [args] { return run_convert(*args); }; });
}

}  // namespace qtune::cli
