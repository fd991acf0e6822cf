// The training loop shared by `podkv train` (from scratch) and `podkv adapt`
// (PoD post-training adaptation): micro-batches accumulated into one AdamW
// step under the warmup + cosine schedule and global-norm clipping, a JSONL
// log (one line per step, plus eval lines), periodic evaluation and
// checkpoints. Deterministic given the seed, also across a resume.
// The library does not print: progress goes to the callbacks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/data.h"
#include "train/model_train.h"
#include "train/train_device.h"

namespace podkv::train {

class BatchDumpWriter;

struct TrainOptions {
  int64_t steps = 1000;        // optimiser steps
  int64_t batch = 8;           // sequences per micro-batch
  int grad_accum = 1;          // micro-batches per step
  int64_t seq_len = 256;
  double lr = 1e-3;
  double min_lr = -1;          // end of the cosine; < 0 = lr / 10
  int64_t warmup = -1;         // < 0 = min(100, steps / 10)
  AdamWOptions adamw;
  double clip = 1.0;           // global-norm clip; <= 0 = off
  uint64_t seed = 1;
  std::string train = "all";   // all | attention | qk
  int64_t eval_every = 0;      // 0 = only at the start and the end
  int64_t eval_batches = 4;
  int64_t accuracy_samples = 64;   // per synthetic task, when tasks are given
  int64_t save_every = 0;      // 0 = only at the end
  int64_t stop_at = 0;         // > 0: save and stop after this step (a later resume continues)
  std::string out_dir;         // checkpoint directory
  std::string log_path;        // JSONL; empty = OUT/train_log.jsonl
  std::string tokenizer_path;  // copied into checkpoints
  std::string dump_batches;    // every training micro-batch, in order (train/batch_dump.h); empty = none
  std::string device = "cpu";  // cpu | cuda
  MatmulPrecision precision = MatmulPrecision::BF16;  // of the GPU's matrix products
  bool recompute = false;  // GPU: recompute each layer's activations in the backward
  nlohmann::json extra_state = nlohmann::json::object();  // recorded in trainer_state.json
};

struct StepReport {
  int64_t step = 0, steps = 0;  // step is 1-based once done
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, elapsed_s = 0, eta_s = 0;
  double model_flops_per_s = 0;  // tokens_per_s · model_flops_per_token
};

// Training FLOPs of one token (forward + backward): 6 · the parameters of
// every matrix product (the LM head included, the embedding lookup not) plus
// causal attention's 6 · layers · heads · head_dim · seq.
double model_flops_per_token(const Transformer<float>& model, int64_t seq);

struct EvalReport {
  int64_t step = 0;
  double loss = 0;                          // validation loss (mean over counted targets)
  std::map<std::string, double> accuracy;   // per synthetic task: samples with every answer token right
};

// Mean loss over `batches` validation batches.
double validation_loss(TrainDevice& model, const BatchSource& data, int64_t batches, int64_t batch, int64_t seq);
double validation_loss(Transformer<float>& model, const BatchSource& data, int64_t batches, int64_t batch, int64_t seq);
// Fraction of `samples` synthetic samples of `task` whose answer tokens are all the argmax.
double task_accuracy(TrainDevice& model, const BatchSource& data, Task task, int64_t samples, int64_t batch,
                     int64_t seq);
double task_accuracy(Transformer<float>& model, const BatchSource& data, Task task, int64_t samples, int64_t batch,
                     int64_t seq);

class Trainer {
 public:
  // Checks the options against the model (seq_len within the context, ...);
  // throws Error naming the option. Steps run on options.device.
  // With options.dump_batches, the dump file is created here (and again by
  // resume); run() fills it and renames it into place at its end.
  Trainer(Transformer<float>& model, const BatchSource& data, std::vector<Task> accuracy_tasks, TrainOptions options);
  ~Trainer();

  // Continues from a checkpoint of the same model (parameters, AdamW state, step).
  void resume(const std::string& dir);
  int64_t start_step() const { return start_step_; }

  EvalReport evaluate(int64_t step);
  // Mean validation loss of the model as it is now (on the training device).
  double validation_loss();
  void set_extra_state(nlohmann::json state) { options_.extra_state = std::move(state); }
  TrainDevice& device() { return *device_; }
  // Runs the remaining steps; evaluates at the start, every eval_every steps
  // and at the end; saves every save_every steps and at the end.
  void run(const std::function<void(const StepReport&)>& on_step, const std::function<void(const EvalReport&)>& on_eval);

  const std::string& log_path() const { return options_.log_path; }

 private:
  void log(const nlohmann::json& line);
  void save(int64_t step);
  void open_dump();

  Transformer<float>& model_;
  const BatchSource& data_;
  std::vector<Task> accuracy_tasks_;
  TrainOptions options_;
  AdamW optimizer_;
  std::vector<ParamRange> ranges_;  // trainable tensors
  std::unique_ptr<TrainDevice> device_;
  std::unique_ptr<BatchDumpWriter> dump_;  // --dump-batches
  int64_t start_step_ = 0;
};

}  // namespace podkv::train
