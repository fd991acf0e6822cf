// Batch dumps: every training micro-batch a run draws, in the order it draws
// them, so that another framework (scripts/train_torch_compare.py) can replay
// exactly the same data (podkv train / adapt --dump-batches).
//
// Layout (little-endian, 48-byte header, then the micro-batches):
//   offset  type      field
//        0  char[8]   magic "PODKVBAT"
//        8  uint32    format version (1)
//       12  uint32    micro-batches per optimiser step (--grad-accum)
//       16  uint64    sequences per micro-batch B (--batch)
//       24  uint64    tokens per sequence S (--seq-len)
//       32  uint64    first optimiser step (0-based; > 0 after --resume)
//       40  uint64    optimiser steps N in the file
//       48  N · grad_accum micro-batches, step by step, each
//             int32 tokens[B][S], then int32 targets[B][S]
// targets[b][s] is the token after tokens[b][s] (the next-token target), or
// -1 where no loss is counted (synthetic samples count their answers only).
// The file is exactly 48 + N · grad_accum · 8 · B · S bytes. Validation
// batches are not in it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "train/data.h"

namespace podkv {
class OutputFile;
}

namespace podkv::train {

inline constexpr char kBatchDumpMagic[8] = {'P', 'O', 'D', 'K', 'V', 'B', 'A', 'T'};
inline constexpr uint32_t kBatchDumpVersion = 1;
inline constexpr size_t kBatchDumpHeaderBytes = 48;
inline constexpr int32_t kIgnoredTarget = -1;

struct BatchDumpHeader {
  uint32_t grad_accum = 1;
  int64_t batch = 0, seq = 0;
  int64_t first_step = 0, steps = 0;
};

// Size in bytes of a dump with this header.
uint64_t batch_dump_bytes(const BatchDumpHeader& header);

// Writes PATH.tmp as batches come and renames it to PATH once all of them are
// in (commit), so PATH is never half-written. Throws Error naming the file.
class BatchDumpWriter {
 public:
  BatchDumpWriter(const std::string& path, const BatchDumpHeader& header);
  ~BatchDumpWriter();
  BatchDumpWriter(const BatchDumpWriter&) = delete;
  BatchDumpWriter& operator=(const BatchDumpWriter&) = delete;

  // Appends one micro-batch (its shape must be the header's).
  void append(const Batch& batch);
  // Renames the file into place; throws Error when fewer micro-batches were
  // appended than the header says.
  void commit();

 private:
  std::string path_;
  BatchDumpHeader header_;
  std::unique_ptr<OutputFile> out_;
  int64_t written_ = 0;  // micro-batches
};

}  // namespace podkv::train
