// Reading a whole file, stream or line into memory under a size limit. Every
// text or JSON input goes through these, so that /dev/zero, a runaway pipe or a
// huge file is one error naming it and the limit instead of memory growing
// without bound.
#pragma once

#include <cstddef>
#include <istream>
#include <string>

namespace podkv {

// Text read whole: eval --data, analyze --calib, --ids-file, stdin,
// tokenizer.json, tokenizer.model; one line of a training data file.
inline constexpr size_t kMaxTextBytes = size_t{256} << 20;
// One line of a JSONL input (tokenize --jsonl, eval's progress.jsonl, train logs).
inline constexpr size_t kMaxJsonLineBytes = size_t{16} << 20;
// One training data file (read line by line; its tokens are kept).
inline constexpr size_t kMaxCorpusFileBytes = size_t{1} << 30;
// Small JSON files: config.json, settings and state files, tokenizer_config.json.
inline constexpr size_t kMaxSmallJsonBytes = size_t{4} << 20;
// model.safetensors.index.json (one line per tensor; models with experts have many).
inline constexpr size_t kMaxIndexJsonBytes = size_t{64} << 20;

// "256 MiB", "4 MiB", "1 GiB", "1000 bytes".
std::string limit_string(size_t bytes);

// The whole file at `path`; a regular file is sized first, a pipe or special
// file is read until the limit. Throws Error "WHAT PATH: ..." ("PATH: ..."
// when `what` is empty) when it cannot be opened or read, or holds more than
// `limit` bytes.
std::string read_file_bounded(const std::string& path, size_t limit, const std::string& what = "");

// The rest of `in`; `name` ("stdin") names it in the error when it holds more
// than `limit` bytes.
std::string read_stream_bounded(std::istream& in, size_t limit, const std::string& name);

// The next line of `in` without its '\n'; false at the end of the input.
// Throws Error naming `name` and the line number when a line is longer than
// `limit` bytes. `line_number` counts the lines read (1 after the first).
bool read_line_bounded(std::istream& in, std::string& line, size_t limit, const std::string& name,
                       int64_t& line_number);

}  // namespace podkv
