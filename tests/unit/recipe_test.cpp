#include "qtune/train/recipe.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qtune/train/run_setup.h"
#include "test_util.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

// A directory holding what a recipe points at: a model dir with config.json and a data file.
struct RecipeFixture {
  std::string dir = test::temp_dir();
  RecipeFixture() {
    fs::create_directories(dir + "/model");
    fs::copy_file(std::string(QTUNE_TEST_SOURCE_DIR) + "/configs/models/tiny-llama.json", dir + "/model/config.json");
    std::ofstream(dir + "/train.jsonl") << R"({"instruction": "a", "output": "b"})" << "\n";
  }
  std::string text(const std::string& extra = "") const {
    return "model:\n  path: " + dir + "/model\ndata:\n  train: " + dir + "/train.jsonl\n" + extra;
  }
  std::string write(const std::string& body) const {
    const auto path = dir + "/recipe.yaml";
    std::ofstream(path) << body;
    return path;
  }
};

TEST(Recipe, DefaultsFollowQLoRAAndEveryKeyShowsInHelp) {
  RecipeFixture f;
  const auto r = Recipe::from_yaml_text(f.text(), "r.yaml");
  EXPECT_EQ(r.quant.format, "nf4");
  EXPECT_TRUE(r.quant.double_quant);
  EXPECT_EQ(r.optim.name, "paged_adamw");
  EXPECT_DOUBLE_EQ(r.optim.lr, 2e-4);
  EXPECT_DOUBLE_EQ(r.optim.beta2, 0.999);
  EXPECT_DOUBLE_EQ(r.train.max_grad_norm, 0.3);
  EXPECT_DOUBLE_EQ(r.schedule.warmup_ratio, 0.03);
  EXPECT_EQ(r.schedule.kind, "constant");
  const auto help = recipe_help();
  for (const auto& k : recipe_schema()) {
    EXPECT_NE(help.find(k.key), std::string::npos) << k.key;
    EXPECT_FALSE(k.description.empty()) << k.key;
  }
  EXPECT_NE(help.find("paged_adamw | adamw_8bit"), std::string::npos);
}

TEST(Recipe, ReadsEverySectionAndOverridesWin) {
  RecipeFixture f;
  const auto r = Recipe::from_yaml_text(
      f.text("lora:\n  r: 8\n  targets: [q_proj, v_proj]\n  rank_pattern: {\"layers.0.self_attn.q_proj\": 4}\n"
             "  rslora: true\noptim:\n  name: adamw_8bit\n  lr: 1e-4\ntrain:\n  precision: fp32\n"
             "  gradient_checkpointing: false\n"),
      "r.yaml", {"lora.r=32", "optim.lr=3e-4", "data.packing=false", "quant.keep_int8=[\"layers.0.*\"]"});
  EXPECT_EQ(r.lora.config.r, 32);
  EXPECT_EQ(r.lora.config.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(r.lora.config.rank_pattern.at("layers.0.self_attn.q_proj"), 4);
  EXPECT_TRUE(r.lora.config.use_rslora);
  EXPECT_EQ(r.optim.name, "adamw_8bit");
  EXPECT_DOUBLE_EQ(r.optim.lr, 3e-4);
  EXPECT_FALSE(r.data.packing);
  EXPECT_FALSE(r.train.gradient_checkpointing);
  EXPECT_EQ(r.quant.keep_int8, (std::vector<std::string>{"layers.0.*"}));
}

TEST(Recipe, ToYamlRoundTrips) {
  RecipeFixture f;
  const auto r = Recipe::from_yaml_text(f.text("lora:\n  alpha_pattern: {\"q_proj\": 8.5}\nname: \"x: y\"\n"), "r.yaml");
  const auto again = Recipe::from_yaml_text(r.to_yaml(), "again.yaml");
  EXPECT_EQ(again.to_yaml(), r.to_yaml());
  EXPECT_EQ(again.name, "x: y");
  EXPECT_EQ(again.run_affecting_values(), r.run_affecting_values());
  // Cadence keys do not change what a run computes; hyperparameters do.
  EXPECT_EQ(r.run_affecting_values().count("train.log_every"), 0u);
  EXPECT_EQ(r.run_affecting_values().count("optim.lr"), 1u);
}

TEST(Recipe, UnknownKeysSuggestTheClosest) {
  RecipeFixture f;
  auto msg = test::error_of([&] { Recipe::from_yaml_text(f.text("lora:\n  rank: 8\n"), "r.yaml"); });
  EXPECT_NE(msg.find("r.yaml:6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown recipe key 'lora.rank'"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text("optim:\n  learning_rate: 1\n"), "r.yaml"); });
  EXPECT_NE(msg.find("optim.learning_rate"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"trian.max_steps=3"}); });
  EXPECT_NE(msg.find("did you mean 'train.max_steps'"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text("optimizer:\n  lr: 3\n"), "r.yaml"); });
  EXPECT_NE(msg.find("unknown recipe section 'optimizer'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sections: model, quant, lora, data, optim, schedule, train"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text("schedule:\n  warmup_step: 3\n"), "r.yaml"); });
  EXPECT_NE(msg.find("did you mean 'schedule.warmup_steps'"), std::string::npos) << msg;
}

TEST(Recipe, WrongTypesNameKeyValueAndExpectedType) {
  RecipeFixture f;
  auto msg = test::error_of([&] { Recipe::from_yaml_text(f.text("lora:\n  r: sixteen\n"), "r.yaml"); });
  EXPECT_NE(msg.find("'lora.r' must be an integer, got 'sixteen'"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"data.packing=maybe"}); });
  EXPECT_NE(msg.find("override 'data.packing=maybe'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("true or false"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"optim.name=sgd"}); });
  EXPECT_NE(msg.find("'optim.name' must be one of adamw | paged_adamw | adamw_8bit | paged_adamw_8bit, got 'sgd'"),
            std::string::npos)
      << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text("lora:\n  targets: {a: 1}\n"), "r.yaml"); });
  EXPECT_NE(msg.find("'lora.targets' must be a list of strings"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"lora.r"}); });
  EXPECT_NE(msg.find("expected key=value"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"train.batch_size=0"}); });
  EXPECT_NE(msg.find("'train.batch_size' must be >= 1, got 0"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"lora.dropout=1.5"}); });
  EXPECT_NE(msg.find("dropout"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text("model: [1, 2]\n", "r.yaml"); });
  EXPECT_NE(msg.find("section 'model' must be a mapping"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text("model:\n  path: [unclosed\n", "r.yaml"); });
  EXPECT_NE(msg.find("not valid YAML"), std::string::npos) << msg;
}

TEST(Recipe, MissingFilesNameTheKeyAndPath) {
  RecipeFixture f;
  auto msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"data.train=/no/such.jsonl"}); });
  EXPECT_NE(msg.find("'data.train' names '/no/such.jsonl', which does not exist"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text("data:\n  train: " + f.dir + "/train.jsonl\n", "r.yaml"); });
  EXPECT_NE(msg.find("'model.path' is required"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::from_yaml_text(f.text(), "r.yaml", {"model.path=" + f.dir}); });
  EXPECT_NE(msg.find("has no config.json"), std::string::npos) << msg;
  msg = test::error_of([&] { Recipe::load(f.dir + "/absent.yaml"); });
  EXPECT_NE(msg.find("absent.yaml"), std::string::npos) << msg;
}

TEST(Recipe, RelativePathsResolveBesideTheRecipe) {
  RecipeFixture f;
  const auto path = f.write("model:\n  path: model\ndata:\n  train: train.jsonl\n");
  const auto r = Recipe::load(path);
  EXPECT_EQ(fs::path(r.model.path), fs::path(f.dir) / "model");
  EXPECT_EQ(fs::path(r.data.train), fs::path(f.dir) / "train.jsonl");
}

// Issue 36 #24: a file beside the recipe was silently replaced by one of the same name in the working directory.
// The recipe's directory comes first; a path it lacks comes from the working directory; both end absolute.
TEST(Recipe, RelativePathsPreferTheRecipesDirectoryToTheWorkingDirectory) {
  RecipeFixture f;
  const auto path = f.write("model:\n  path: model\ndata:\n  train: train.jsonl\n  eval: eval.jsonl\n");
  const auto cwd = f.dir + "/elsewhere";
  fs::create_directories(cwd + "/model");
  fs::copy_file(f.dir + "/model/config.json", cwd + "/model/config.json");
  std::ofstream(cwd + "/train.jsonl") << R"({"instruction": "other", "output": "file"})" << "\n";
  std::ofstream(cwd + "/eval.jsonl") << R"({"instruction": "only", "output": "here"})" << "\n";
  const auto previous = fs::current_path();
  fs::current_path(cwd);
  const auto r = Recipe::load(path, {"model.tokenizer=model"});
  fs::current_path(previous);
  EXPECT_EQ(fs::path(r.model.path), fs::path(f.dir) / "model");
  EXPECT_EQ(fs::path(r.data.train), fs::path(f.dir) / "train.jsonl");
  EXPECT_EQ(fs::path(r.data.eval), fs::path(cwd) / "eval.jsonl");       // absent beside the recipe
  EXPECT_EQ(fs::path(r.model.tokenizer), fs::path(cwd) / "model");      // an override: the working directory's
  for (const auto& [key, value] : r.input_paths())
    EXPECT_TRUE(value.empty() || fs::path(value).is_absolute()) << key << ": " << value;
}

TEST(Recipe, QuantFormatKeepParsesAndNeedsAGgufBase) {
  RecipeFixture f;
  const auto r = Recipe::from_yaml_text(f.text("quant:\n  format: keep\n"), "r.yaml");
  EXPECT_EQ(r.quant.format, "keep");
  EXPECT_NE(recipe_help().find("keep (a .gguf base's own blocks"), std::string::npos);
  auto msg = test::error_of([&] { Recipe::from_yaml_text(f.text("quant:\n  format: q4_1\n"), "r.yaml"); });
  EXPECT_NE(msg.find("'quant.format' must be one of nf4 | fp4 | int8 | w8a8 | none | keep, got 'q4_1'"), std::string::npos)
      << msg;
  // The model here is a Hugging Face directory: the plan names the key and the path before any weight is read.
  msg = test::error_of([&] { quant_plan_of(r); });
  EXPECT_NE(msg.find("quant.format keep trains on the ggml blocks of a GGUF base, but model.path '" + f.dir + "/model'"),
            std::string::npos)
      << msg;
}

TEST(Recipe, FullModeNeedsNoQuantization) {
  RecipeFixture f;
  const auto msg = test::error_of([&] { Recipe::from_yaml_text(f.text("train:\n  mode: full\n"), "r.yaml"); });
  EXPECT_NE(msg.find("quant.format: none"), std::string::npos) << msg;
  EXPECT_NO_THROW(Recipe::from_yaml_text(f.text("train:\n  mode: full\nquant:\n  format: none\n"), "r.yaml"));
}

}  // namespace
}  // namespace qtune::train
