#include <c10/util/Exception.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>
#include <exception>

#include "commands.h"
#include "qtune/util/error.h"
#include "qtune/util/omp_wait.h"

int main(int argc, char** argv) {
  // Before anything runs an OpenMP region: this may start the binary again with a short OpenMP spin.
  qtune::choose_omp_wait(argc, argv);
  // Diagnostics go to stderr: stdout carries only a command's output (--json, generated text, ids).
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
  CLI::App app{"qtune: QLoRA fine-tuning of Llama, Mistral, Qwen2/Qwen3, Gemma 2/3 and Phi-3 models on a 4-bit frozen base, in one native binary"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "qtune 0.1.0");
  qtune::cli::Action action;
  qtune::cli::add_train(app, action);
  qtune::cli::add_plan(app, action);
  qtune::cli::add_inspect(app, action);
  qtune::cli::add_tokenize(app, action);
  qtune::cli::add_template(app, action);
  qtune::cli::add_convert(app, action);
  qtune::cli::add_generate(app, action);
  qtune::cli::add_eval(app, action);
  qtune::cli::add_init(app, action);
  qtune::cli::add_bench(app, action);
  qtune::cli::add_quantize(app, action);
  qtune::cli::add_export(app, action);
  qtune::cli::add_demo_data(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Every error a user can cause ends as one "error: ..." line and exit status 1.
  auto report = [](const char* message) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", message);
    return 1;
  };
  try {
    return action();
  } catch (const qtune::Error& e) {
    return report(e.what());
  } catch (const c10::Error& e) {
    // LibTorch's own message, without the C++ stack trace it appends: a user reads what went wrong, not frames.
    return report(e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return report("out of memory (try a smaller train.batch_size, data.max_seq_len or model)");
  } catch (const std::exception& e) {
    return report(e.what());
  }
}
