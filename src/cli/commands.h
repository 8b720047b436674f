#pragma once
// Each subcommand registers itself on the app and returns the action to run once parsing succeeded.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace qtune::cli {

using Action = std::function<int()>;

void add_inspect(CLI::App& app, Action& action);
void add_generate(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_init(CLI::App& app, Action& action);
void add_bench(CLI::App& app, Action& action);
void add_bench_train(CLI::App& bench, Action& action);  // bench train, bench decode (bench_train.cpp)
void add_bench_tokenize(CLI::App& bench, Action& action);  // bench tokenize (bench_tokenize.cpp)
void add_bench_template(CLI::App& bench, Action& action);  // bench template (bench_tokenize.cpp)
void add_quantize(CLI::App& app, Action& action);
void add_train(CLI::App& app, Action& action);
void add_plan(CLI::App& app, Action& action);
void add_demo_data(CLI::App& app, Action& action);
void add_export(CLI::App& app, Action& action);
void add_convert(CLI::App& app, Action& action);
void add_tokenize(CLI::App& app, Action& action);
void add_template(CLI::App& app, Action& action);

}  // namespace qtune::cli
