// Training checkpoints in the Hugging Face layout: DIR/config.json,
// DIR/model.safetensors (float32, Hugging Face names), the tokenizer files
// copied along, DIR/pod.json for a PoD-adapted model, and for resuming
// DIR/optimizer.safetensors (AdamW moments) + DIR/trainer_state.json.
// podkv (Model::load) and transformers (LlamaForCausalLM.from_pretrained) load
// the directory as it is.
//
// A checkpoint is written whole into DIR.tmp and then swapped in by renames,
// so DIR is never half-written: it holds the previous checkpoint or the new one.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/model_train.h"

namespace podkv::train {

struct CheckpointContents {
  const Transformer<float>* model = nullptr;
  std::string tokenizer_path;          // tokenizer file or directory to copy along; empty = none
  const AdamW* optimizer = nullptr;    // with the state below: resumable
  nlohmann::json trainer_state;        // step, seed, options (written as trainer_state.json)
  std::vector<std::string> carry_files;  // other files copied in (e.g. the training log)
};

// Throws Error naming DIR when it cannot be written; DIR is then unchanged.
void save_checkpoint(const std::string& dir, const CheckpointContents& contents);

// Reads a checkpoint written by save_checkpoint back into `model` (and the
// optimizer moments into `optimizer`); returns trainer_state.json. Throws
// Error("--resume DIR: ...") when DIR is not a resumable checkpoint or holds
// another model (a config field or a tensor shape differs).
nlohmann::json load_checkpoint(const std::string& dir, Transformer<float>& model, AdamW& optimizer);

// The tokenizer files of PATH (a tokenizer file, or a directory holding
// tokenizer.json / tokenizer.model and their companion files).
std::vector<std::string> tokenizer_files(const std::string& path);

}  // namespace podkv::train
