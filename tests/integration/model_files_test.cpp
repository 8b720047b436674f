// Every command that writes a model directory carries the source's chat template (chat_template.jinja, where
// transformers 5 saves it) and its generation_config.json (stop ids, sampling defaults) over unchanged: the
// bitsandbytes, GPTQ and AWQ checkpoints of `qtune quantize`, a recipe's calibrated base (which a recipe with
// data.chat_template: auto then trains on) and `qtune export --merged`.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qtune/io/atomic_file.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// OpenHermes' ChatML template as the hub ships it, and a generation config like Llama-3-Instruct's: two stop ids,
// sampling defaults, and a key qtune does not read.
void add_chat_template_and_generation_config(const TinyRun& t) {
  io::write_text_atomically(t.model + "/chat_template.jinja",
                            R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + )"
                            R"(message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %})"
                            R"({{ '<|im_start|>assistant\n' }}{% endif %})");
  const auto tok = data::Tokenizer::load(t.model + "/tokenizer.model");
  io::write_text_atomically(t.model + "/generation_config.json",
                            fmt::format(R"({{"bos_token_id": {}, "eos_token_id": [{}, {}], "do_sample": true, )"
                                        R"("temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.1}})",
                                        tok.bos_id(), tok.eos_id(), tok.bos_id()) +
                                "\n");
}

void expect_carried_over(const TinyRun& t, const std::string& dir) {
  for (const char* f : {"chat_template.jinja", "generation_config.json"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << dir << " lacks " << f;
    if (fs::exists(dir + "/" + f)) EXPECT_EQ(read(dir + "/" + f), read(t.model + "/" + f)) << dir << "/" << f;
  }
}

TEST(ModelFiles, QuantizedCheckpointsCarryTheChatTemplateAndGenerationConfig) {
  TinyRun t;
  add_chat_template_and_generation_config(t);
  const std::string calib = " --calib " + t.dir + "/corpus.txt --calib-samples 2 --calib-seq-len 64 --group-size 32";
  for (const auto& [name, args] : std::vector<std::pair<std::string, std::string>>{
           {"nf4", "--format nf4"}, {"rtn", "--method rtn --group-size 32"}, {"gptq", "--method gptq" + calib},
           {"awq", "--method awq --awq-search-samples -1" + calib}}) {
    const auto out = t.dir + "/" + name;
    const auto r = test::run_qtune("quantize " + t.model + " --out " + out + " " + args);
    ASSERT_EQ(r.code, 0) << name << ": " << r.err;
    expect_carried_over(t, out);
  }
}

TEST(ModelFiles, ACalibratedBaseAndTheMergedExportCarryTheChatTemplateAndGenerationConfig) {
  TinyRun t;
  add_chat_template_and_generation_config(t);
  // data.chat_template auto reads the template of the model the run trains on: the calibrated base.
  const auto s = run_training(t.recipe({"quant.method=rtn", "quant.group_size=32", "data.chat_template=auto",
                                        "train.max_steps=2"}),
                              quiet());
  EXPECT_EQ(s.steps, 2);
  int bases = 0;
  for (const auto& e : fs::directory_iterator(t.dir + "/run"))
    if (e.path().filename().string().rfind("base-rtn-", 0) == 0) expect_carried_over(t, e.path().string()), ++bases;
  EXPECT_EQ(bases, 1);

  const auto merged = t.dir + "/merged";
  const auto r = test::run_qtune("export " + t.dir + "/run --merged " + merged + " --no-quality-check");
  ASSERT_EQ(r.code, 0) << r.err;
  expect_carried_over(t, merged);
}

}  // namespace
}  // namespace qtune::train
