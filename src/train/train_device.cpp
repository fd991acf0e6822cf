#include "train/train_device.h"

#include "train/cuda_trainer.h"
#include "util/error.h"

namespace podkv::train {

MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "f32") return MatmulPrecision::F32;
  if (name == "tf32") return MatmulPrecision::TF32;
  if (name == "bf16") return MatmulPrecision::BF16;
  throw Error("--precision: unknown precision '" + name + "' (known: f32, tf32, bf16)");
}

double CpuTrainDevice::clip_grads(const std::vector<ParamRange>& ranges, double max_norm) {
  return clip_by_global_norm(model_.grads().data(), ranges, max_norm);
}

void CpuTrainDevice::adamw_step(const std::vector<ParamRange>& ranges, double lr) {
  check(optimizer_ != nullptr, "cpu trainer: no optimiser");
  optimizer_->step(model_.params().data(), model_.grads().data(), ranges, lr);
}

std::unique_ptr<TrainDevice> make_train_device(const std::string& device, Transformer<float>& model,
                                               AdamW* optimizer, MatmulPrecision precision, bool recompute) {
  if (device == "cpu") {
    if (recompute) throw Error("--recompute: only with --device cuda (the CPU trainer keeps every activation)");
    return std::make_unique<CpuTrainDevice>(model, optimizer);
  }
  if (device != "cuda") throw Error("--device: unknown device '" + device + "' (known: cpu, cuda)");
#if defined(PODKV_HAVE_CUDA)
  return std::make_unique<CudaTrainer>(model, optimizer, precision, recompute);
#else
  (void)precision, (void)recompute;
  throw Error("--device cuda: this podkv was built without CUDA (configure with -DPODKV_CUDA=ON)");
#endif
}

}  // namespace podkv::train
