// Each subcommand registers itself on the app; its callback runs the command.
#pragma once

#include <CLI/CLI.hpp>

namespace podkv::cli {

void add_generate_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_tokenize_commands(CLI::App& app);
void add_info_command(CLI::App& app);
void add_memory_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_create_model_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_train_commands(CLI::App& app);  // train, adapt, plot-loss
void add_eval_command(CLI::App& app);
void add_analyze_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace podkv::cli
