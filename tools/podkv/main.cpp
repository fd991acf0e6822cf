// podkv: the command-line program on top of the podkv library.
#include <cstdio>
#include <exception>
#include <string>

#include "commands.h"
#include "common.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"podkv: long-context Llama inference with PoD KV-cache compression"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "podkv 0.1.0");
  // Usage errors, like every other error: one line on stderr.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "error: " + std::string(e.what()) + " (run with --help for usage)\n";
  });
  podkv::cli::add_generate_command(app);
  podkv::cli::add_logits_command(app);
  podkv::cli::add_tokenize_commands(app);
  podkv::cli::add_info_command(app);
  podkv::cli::add_memory_command(app);
  podkv::cli::add_bench_command(app);
  podkv::cli::add_create_model_command(app);
  podkv::cli::add_convert_command(app);
  podkv::cli::add_train_commands(app);
  podkv::cli::add_eval_command(app);
  podkv::cli::add_analyze_command(app);
  podkv::cli::add_serve_command(app);
  podkv::cli::add_shared_option_checks(app);
  // CLI11 reads an unknown first word as a stray argument and asks for "a subcommand"; name the
  // word and the commands instead.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      found = found || sub->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) {
      std::fprintf(stderr, "error: unknown command '%s' (commands: %s)\n", argv[1], known.c_str());
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 1 like other errors.
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const podkv::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
