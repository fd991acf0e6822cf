#include "train/trainer.h"

#include <cmath>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "train/batch_dump.h"
#include "train/checkpoint.h"
#include "util/error.h"

namespace podkv::train {

namespace fs = std::filesystem;

double validation_loss(TrainDevice& model, const BatchSource& data, int64_t batches, int64_t batch, int64_t seq) {
  LossStats total;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch b = data.validation_batch(i, batch, seq);
    total += model.forward(b.tokens.data(), b.targets.data(), b.batch, b.seq);
  }
  return total.mean();
}

double validation_loss(Transformer<float>& model, const BatchSource& data, int64_t batches, int64_t batch, int64_t seq) {
  CpuTrainDevice cpu(model, nullptr);
  return validation_loss(cpu, data, batches, batch, seq);
}

double task_accuracy(TrainDevice& model, const BatchSource& data, Task task, int64_t samples, int64_t batch,
                     int64_t seq) {
  const int64_t vocab = model.model().config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(batch * seq * vocab));
  int64_t right = 0, seen = 0;
  for (int64_t index = 0; seen < samples; ++index) {
    const Batch b = data.task_batch(task, index, batch, seq);
    model.forward(b.tokens.data(), nullptr, b.batch, b.seq, logits.data());
    for (int64_t s = 0; s < batch && seen < samples; ++s, ++seen) {
      bool all = true;
      for (int64_t t = 0; t < seq && all; ++t) {
        const int32_t target = b.targets[s * seq + t];
        if (target < 0) continue;
        const float* row = &logits[(s * seq + t) * vocab];
        all = std::max_element(row, row + vocab) - row == target;
      }
      right += all;
    }
  }
  return static_cast<double>(right) / static_cast<double>(samples);
}

double task_accuracy(Transformer<float>& model, const BatchSource& data, Task task, int64_t samples, int64_t batch,
                     int64_t seq) {
  CpuTrainDevice cpu(model, nullptr);
  return task_accuracy(cpu, data, task, samples, batch, seq);
}

double model_flops_per_token(const Transformer<float>& model, int64_t seq) {
  const ModelConfig& c = model.config();
  double matrices = 0;
  for (const TensorInfo& t : model.tensors())
    if (t.shape.size() == 2 && (t.kind != TensorKind::Embedding || c.tie_word_embeddings))
      matrices += static_cast<double>(t.size);
  return 6.0 * matrices + 6.0 * c.num_layers * c.num_heads * c.head_dim * static_cast<double>(seq);
}

Trainer::Trainer(Transformer<float>& model, const BatchSource& data, std::vector<Task> accuracy_tasks,
                 TrainOptions options)
    : model_(model),
      data_(data),
      accuracy_tasks_(std::move(accuracy_tasks)),
      options_(std::move(options)),
      optimizer_(model.params().size(), options_.adamw) {
  const ModelConfig& c = model.config();
  check(options_.steps >= 1, "--steps: must be >= 1");
  check(options_.batch >= 1, "--batch: must be >= 1");
  check(options_.grad_accum >= 1, "--grad-accum: must be >= 1");
  check(options_.seq_len >= 2, "--seq-len: must be >= 2");
  if (options_.seq_len > c.max_position_embeddings)
    throw Error("--seq-len: " + std::to_string(options_.seq_len) + " is above the model's context (" +
                std::to_string(c.max_position_embeddings) + " tokens, max_position_embeddings)");
  check(options_.lr > 0, "--lr: must be > 0");
  const AdamWOptions& a = options_.adamw;
  check(a.beta1 >= 0 && a.beta1 < 1, "--beta1: must be in [0, 1), got " + std::to_string(a.beta1));
  check(a.beta2 >= 0 && a.beta2 < 1, "--beta2: must be in [0, 1), got " + std::to_string(a.beta2));
  check(a.weight_decay >= 0, "--weight-decay: must be >= 0, got " + std::to_string(a.weight_decay));
  check(options_.clip >= 0, "--clip: must be >= 0 (0 = off), got " + std::to_string(options_.clip));
  check(options_.eval_batches >= 1, "--eval-batches: must be >= 1");
  check(options_.accuracy_samples >= 1, "--accuracy-samples: must be >= 1");
  check(!options_.out_dir.empty(), "--out: required");
  if (options_.min_lr < 0) options_.min_lr = options_.lr / 10;
  if (options_.warmup < 0) options_.warmup = std::min<int64_t>(100, options_.steps / 10);
  if (options_.log_path.empty()) options_.log_path = (fs::path(options_.out_dir) / "train_log.jsonl").string();
  model_.set_trainable(trainable_mask(model_.tensors(), options_.train));
  for (size_t i = 0; i < model_.tensors().size(); ++i)
    if (model_.trainable()[i]) ranges_.push_back({model_.tensors()[i].offset, model_.tensors()[i].size, model_.tensors()[i].decay});
  // Fail on bad data now rather than after the first evaluation.
  data_.train_batch(0, 0, 1, options_.seq_len);
  device_ = make_train_device(options_.device, model_, &optimizer_, options_.precision, options_.recompute);
  open_dump();
}

Trainer::~Trainer() = default;

void Trainer::open_dump() {
  if (options_.dump_batches.empty()) return;
  // The steps run() will run: to --stop-at when it falls among them, else to the end.
  const bool stops = options_.stop_at > start_step_ && options_.stop_at <= options_.steps;
  const int64_t end_step = stops ? options_.stop_at : options_.steps;
  dump_.reset();  // removes the file of an earlier header
  try {
    dump_ = std::make_unique<BatchDumpWriter>(
        options_.dump_batches, BatchDumpHeader{static_cast<uint32_t>(options_.grad_accum), options_.batch,
                                               options_.seq_len, start_step_, end_step - start_step_});
  } catch (const Error& e) {
    throw Error(std::string("--dump-batches: ") + e.what());
  }
}

void Trainer::resume(const std::string& dir) {
  const nlohmann::json state = load_checkpoint(dir, model_, optimizer_);
  device_->from_host();
  start_step_ = state.value("step", int64_t{0});
  if (start_step_ > options_.steps)
    throw Error("--resume " + dir + ": the checkpoint is at step " + std::to_string(start_step_) + ", past --steps " +
                std::to_string(options_.steps));
  open_dump();  // its header names the first step
  // The log of the resumed run continues the checkpoint's.
  const fs::path saved_log = fs::path(dir) / fs::path(options_.log_path).filename();
  if (fs::exists(saved_log) && fs::absolute(saved_log) != fs::absolute(options_.log_path)) {
    fs::create_directories(fs::absolute(options_.log_path).parent_path());
    fs::copy_file(saved_log, options_.log_path, fs::copy_options::overwrite_existing);
  }
}

void Trainer::log(const nlohmann::json& line) {
  std::ofstream f(options_.log_path, std::ios::app);
  f << line.dump() << "\n";
  if (!f) throw Error(options_.log_path + ": cannot write the training log");
}

void Trainer::save(int64_t step) {
  device_->to_host();
  CheckpointContents contents;
  contents.model = &model_;
  contents.tokenizer_path = options_.tokenizer_path;
  contents.optimizer = &optimizer_;
  contents.trainer_state = options_.extra_state;
  contents.trainer_state["step"] = step;
  contents.trainer_state["seed"] = options_.seed;
  contents.trainer_state["train"] = options_.train;
  contents.carry_files = {options_.log_path};
  save_checkpoint(options_.out_dir, contents);
}

double Trainer::validation_loss() {
  return train::validation_loss(*device_, data_, options_.eval_batches, options_.batch, options_.seq_len);
}

EvalReport Trainer::evaluate(int64_t step) {
  EvalReport r;
  r.step = step;
  r.loss = validation_loss();
  for (Task t : accuracy_tasks_)
    r.accuracy[task_name(t)] = task_accuracy(*device_, data_, t, options_.accuracy_samples, options_.batch, options_.seq_len);
  nlohmann::json line = {{"step", step}, {"eval_loss", r.loss}};
  for (const auto& [name, acc] : r.accuracy) line["accuracy_" + name] = acc;
  log(line);
  return r;
}

void Trainer::run(const std::function<void(const StepReport&)>& on_step,
                  const std::function<void(const EvalReport&)>& on_eval) {
  using Clock = std::chrono::steady_clock;
  fs::create_directories(fs::absolute(options_.log_path).parent_path());
  if (start_step_ == 0) std::ofstream(options_.log_path, std::ios::trunc);
  if (on_eval) on_eval(evaluate(start_step_));
  const auto t0 = Clock::now();
  double train_seconds = 0;
  for (int64_t step = start_step_; step < options_.steps; ++step) {
    const auto s0 = Clock::now();
    std::vector<Batch> micro;
    int64_t count = 0;
    for (int m = 0; m < options_.grad_accum; ++m) {
      micro.push_back(data_.train_batch(step, m, options_.batch, options_.seq_len));
      for (int32_t t : micro.back().targets) count += t >= 0;
      if (dump_) dump_->append(micro.back());
    }
    device_->zero_grads();
    LossStats stats;
    // grads of the mean loss over every counted target of the whole step.
    for (const Batch& b : micro)
      stats += device_->forward_backward(b.tokens.data(), b.targets.data(), b.batch, b.seq,
                                       count > 0 ? 1.0 / static_cast<double>(count) : 0.0);
    const double norm = device_->clip_grads(ranges_, options_.clip);
    // A diverged step would poison every later one and the checkpoint.
    if (!std::isfinite(stats.mean()) || !std::isfinite(norm))
      throw Error("training diverged at step " + std::to_string(step + 1) + " (loss " + std::to_string(stats.mean()) +
                  ", gradient norm " + std::to_string(norm) + "); try a lower --lr or a --clip");
    const double lr = learning_rate(step, options_.steps, options_.warmup, options_.lr, options_.min_lr);
    device_->adamw_step(ranges_, lr);
    const double seconds = std::chrono::duration<double>(Clock::now() - s0).count();
    train_seconds += seconds;
    StepReport r;
    r.step = step + 1, r.steps = options_.steps;
    r.loss = stats.mean(), r.lr = lr, r.grad_norm = norm;
    r.tokens_per_s = static_cast<double>(options_.batch * options_.seq_len * options_.grad_accum) / seconds;
    r.model_flops_per_s = r.tokens_per_s * model_flops_per_token(model_, options_.seq_len);
    r.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
    r.eta_s = train_seconds / static_cast<double>(step + 1 - start_step_) * static_cast<double>(options_.steps - step - 1);
    log({{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
         {"tokens_per_s", r.tokens_per_s}, {"model_tflops", r.model_flops_per_s / 1e12}, {"elapsed_s", r.elapsed_s}});
    if (on_step) on_step(r);
    const bool last = step + 1 == options_.steps;
    const bool stop = options_.stop_at > 0 && step + 1 == options_.stop_at;
    if (last || (options_.eval_every > 0 && (step + 1) % options_.eval_every == 0)) {
      const EvalReport e = evaluate(step + 1);
      if (on_eval) on_eval(e);
    }
    if (last || stop || (options_.save_every > 0 && (step + 1) % options_.save_every == 0)) save(step + 1);
    if (stop) break;
  }
  if (dump_) dump_->commit();
}

}  // namespace podkv::train
