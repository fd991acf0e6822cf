#include "backend/cuda_sampler.h"

#if defined(PODKV_HAVE_CUDA)

#include <algorithm>
#include <cstdlib>
#include <string>

#include "util/error.h"

namespace podkv {

namespace {

// `buffer` with room for `bytes` (grown to at least twice its size, after the queued work).
void grow(CudaBackendOps& ops, DeviceBuffer& buffer, size_t bytes) {
  if (bytes <= buffer.bytes()) return;
  ops.synchronize();
  buffer = DeviceBuffer(ops, std::max(bytes, 2 * buffer.bytes()));
}

}  // namespace

void CudaSampler::sample(const float* logits, int64_t rows, int32_t vocab, const SampleRequest* const* requests,
                         int32_t* tokens) {
  if (rows == 0) return;
  // Every row greedy with no penalty (a plain decode step's draw): the argmax spread over many blocks
  // (sampling_greedy.cu), no parameters to upload.
  // PODKV_CUDA_SAMPLE_GREEDY=0: sample_rows_kernel for these rows too (the kernel before, for A/B runs).
  static const bool slices_on = [] {
    const char* e = std::getenv("PODKV_CUDA_SAMPLE_GREEDY");
    return e == nullptr || std::string(e) != "0";
  }();
  bool greedy = slices_on && rows <= cuda::kGreedyMaxRows;
  for (int64_t r = 0; r < rows && greedy; ++r)
    greedy = requests[r]->params.temperature == 0.0f && requests[r]->penalties.empty();
  if (greedy) {
    const size_t part_bytes = static_cast<size_t>(rows) * cuda::greedy_slices(vocab) * 16;
    grow(ops_, scratch_, part_bytes);
    grow(ops_, tokens_device_, static_cast<size_t>(rows) * sizeof(int32_t));
    const size_t ticket_bytes = static_cast<size_t>(rows) * sizeof(unsigned);
    if (tickets_.bytes() < ticket_bytes) {
      grow(ops_, tickets_, ticket_bytes);
      ops_.fill_zero(tickets_.data(), tickets_.bytes());  // each launch leaves them zero after
    }
    cuda::greedy_rows(logits, rows, vocab, scratch_.data(), tickets_.as<unsigned>(), tokens_device_.as<int32_t>(),
                      static_cast<cudaStream_t>(ops_.stream()));
    tokens_device_.download(tokens, static_cast<size_t>(rows) * sizeof(int32_t));
    return;
  }
  args_.resize(static_cast<size_t>(rows));
  penalties_.clear();
  for (int64_t r = 0; r < rows; ++r) {
    const SampleRequest& q = *requests[r];
    const SamplingParams& p = q.params;
    cuda::SampleRowArgs& a = args_[r];
    a.temperature = p.temperature;
    a.top_k = p.top_k;
    a.top_p = p.top_p;
    a.min_p = p.min_p;
    a.repetition_penalty = p.repetition_penalty;
    a.presence = p.presence_penalty;
    a.frequency = p.frequency_penalty;
    a.u = q.u;
    a.penalty_begin = static_cast<int32_t>(penalties_.size());
    for (const SamplePenalty& s : q.penalties) {
      check(s.token >= 0 && s.token < vocab, "sample: history token " + std::to_string(s.token) +
                                                 " is outside the vocabulary of " + std::to_string(vocab));
      penalties_.push_back(cuda::SamplePenaltyArgs{s.token, s.repeated, s.count});
    }
    a.penalty_end = static_cast<int32_t>(penalties_.size());
  }
  const size_t arg_bytes = args_.size() * sizeof(cuda::SampleRowArgs);
  const size_t penalty_bytes = penalties_.size() * sizeof(cuda::SamplePenaltyArgs);
  grow(ops_, args_device_, arg_bytes);
  grow(ops_, penalties_device_, std::max<size_t>(penalty_bytes, 1));
  grow(ops_, scratch_, static_cast<size_t>(rows) * 2 * static_cast<size_t>(vocab) * sizeof(float));
  grow(ops_, tokens_device_, static_cast<size_t>(rows) * sizeof(int32_t));
  args_device_.upload(args_.data(), arg_bytes);
  penalties_device_.upload(penalties_.data(), penalty_bytes);
  cuda::sample_rows(logits, rows, vocab, args_device_.as<cuda::SampleRowArgs>(),
                    penalties_device_.as<cuda::SamplePenaltyArgs>(), scratch_.as<float>(), tokens_device_.as<int32_t>(),
                    static_cast<cudaStream_t>(ops_.stream()));
  tokens_device_.download(tokens, static_cast<size_t>(rows) * sizeof(int32_t));
}

}  // namespace podkv

#endif
