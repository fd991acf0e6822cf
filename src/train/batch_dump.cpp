#include "train/batch_dump.h"

#include <bit>
#include <cstring>

#include "util/error.h"
#include "util/little_endian.h"
#include "util/mapped_file.h"

namespace podkv::train {

// The ids are written as they lie in memory.
static_assert(std::endian::native == std::endian::little, "batch dumps are little-endian");

uint64_t batch_dump_bytes(const BatchDumpHeader& h) {
  return kBatchDumpHeaderBytes + static_cast<uint64_t>(h.steps) * h.grad_accum * 2 * sizeof(int32_t) *
                                     static_cast<uint64_t>(h.batch * h.seq);
}

BatchDumpWriter::BatchDumpWriter(const std::string& path, const BatchDumpHeader& header)
    : path_(path), header_(header) {
  check(header.grad_accum >= 1 && header.batch >= 1 && header.seq >= 1 && header.first_step >= 0 &&
            header.steps >= 0,
        path + ": bad batch dump shape");
  out_ = std::make_unique<OutputFile>(path);
  uint8_t bytes[kBatchDumpHeaderBytes] = {};
  std::memcpy(bytes, kBatchDumpMagic, sizeof kBatchDumpMagic);
  put_le(bytes + 8, kBatchDumpVersion, 4);
  put_le(bytes + 12, header.grad_accum, 4);
  put_le(bytes + 16, static_cast<uint64_t>(header.batch), 8);
  put_le(bytes + 24, static_cast<uint64_t>(header.seq), 8);
  put_le(bytes + 32, static_cast<uint64_t>(header.first_step), 8);
  put_le(bytes + 40, static_cast<uint64_t>(header.steps), 8);
  out_->write(bytes, sizeof bytes);
}

BatchDumpWriter::~BatchDumpWriter() = default;

void BatchDumpWriter::append(const Batch& b) {
  const int64_t capacity = header_.steps * header_.grad_accum;
  if (written_ >= capacity)
    throw Error(path_ + ": batch dump already holds its " + std::to_string(capacity) + " micro-batches");
  const size_t n = static_cast<size_t>(header_.batch * header_.seq);
  if (b.batch != header_.batch || b.seq != header_.seq || b.tokens.size() != n || b.targets.size() != n)
    throw Error(path_ + ": micro-batch of " + std::to_string(b.batch) + " x " + std::to_string(b.seq) +
                " tokens in a dump of " + std::to_string(header_.batch) + " x " + std::to_string(header_.seq));
  out_->write(b.tokens.data(), n * sizeof(int32_t));
  out_->write(b.targets.data(), n * sizeof(int32_t));
  ++written_;
}

void BatchDumpWriter::commit() {
  const int64_t expected = header_.steps * header_.grad_accum;
  if (written_ != expected)
    throw Error(path_ + ": " + std::to_string(written_) + " micro-batches written, the header says " +
                std::to_string(expected));
  out_->commit();
}

}  // namespace podkv::train
