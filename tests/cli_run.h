// Running the podkv CLI from the tests: fork + exec with stdin, stdout and
// stderr redirected to files, so the three streams and the exit status come
// back separately. Plus a temp-dir fixture and helpers to break model fixtures.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace podkv::clitest {

namespace fs = std::filesystem;

inline const fs::path kSourceDir = PODKV_SOURCE_DIR;
inline const fs::path kFixtures = kSourceDir / "tests" / "fixtures" / "models";
inline const fs::path kRefModel = kSourceDir / "models" / "podkv-ref";  // the shipped reference model
inline const fs::path kLlama3Tokenizer = kSourceDir / "tests" / "fixtures" / "tokenizers" / "bpe_llama3" / "tokenizer.json";

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << p;
}

struct CliResult {
  int exit_code = -1;   // valid when !signaled
  int signal = 0;       // the signal that ended it, 0 when it exited
  std::string out, err;
  long peak_rss_mb = 0;   // the program's peak resident memory
  double seconds = 0;     // wall time
  std::string killed;     // why a watchdog of run_cli ended it ("" when it did not)
};

inline std::ostream& operator<<(std::ostream& os, const CliResult& r) {
  return os << "exit " << r.exit_code << " signal " << r.signal << (r.killed.empty() ? "" : " killed: " + r.killed)
            << " peak " << r.peak_rss_mb << " MB in " << r.seconds << " s\nstderr: [" << r.err.substr(0, 2000)
            << "]\nstdout: [" << r.out.substr(0, 2000) << "]";
}

// A watchdog for programs that might read or allocate without bound: past
// `seconds` or `max_rss_mb` resident, the program is killed (and `killed`
// says which), so such a test fails quickly instead of eating the machine.
// `stdin_path` replaces the input text (e.g. /dev/zero).
struct CliLimits {
  double seconds = 0;     // 0 = none
  long max_rss_mb = 0;    // 0 = none
  std::string stdin_path;
};

inline long resident_mb(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

// Runs PODKV_CLI_PATH with `args`, feeding `input` on stdin; `scratch` holds
// the files the streams go through.
inline CliResult run_cli(const std::vector<std::string>& args, const fs::path& scratch, const std::string& input = "",
                         const CliLimits& limits = {}) {
  static std::atomic<int> counter{0};
  const std::string tag = std::to_string(counter++);
  const fs::path in_path = scratch / ("stdin" + tag), out_path = scratch / ("stdout" + tag),
                 err_path = scratch / ("stderr" + tag);
  write_text(in_path, input);
  std::vector<std::string> argv_s = {PODKV_CLI_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  CliResult r;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int in = open(limits.stdin_path.empty() ? in_path.c_str() : limits.stdin_path.c_str(), O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(200);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    setenv("OMP_NUM_THREADS", "2", 1);
    execv(argv[0], argv.data());
    _exit(201);
  }
  EXPECT_GT(pid, 0) << "fork failed";
  int status = 0;
  struct rusage usage {};
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  if (pid > 0 && limits.seconds <= 0 && limits.max_rss_mb <= 0) {
    wait4(pid, &status, 0, &usage);
  } else if (pid > 0) {
    while (wait4(pid, &status, WNOHANG, &usage) == 0) {
      if (limits.seconds > 0 && elapsed() > limits.seconds)
        r.killed = "ran past " + std::to_string(limits.seconds) + " s";
      else if (limits.max_rss_mb > 0 && resident_mb(pid) > limits.max_rss_mb)
        r.killed = "resident memory past " + std::to_string(limits.max_rss_mb) + " MB";
      if (!r.killed.empty()) {
        kill(pid, SIGKILL);
        wait4(pid, &status, 0, &usage);
        break;
      }
      usleep(5000);
    }
  }
  r.seconds = elapsed();
  r.peak_rss_mb = usage.ru_maxrss / 1024;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

// A fresh directory per test, removed afterwards.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    tmp_ = fs::temp_directory_path() /
           ("podkv_cli_" + std::to_string(getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_ / "io");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  CliResult run(const std::vector<std::string>& args, const std::string& input = "", const CliLimits& limits = {}) {
    return run_cli(args, tmp_ / "io", input, limits);
  }

  // A copy of a fixture model's config.json and weights (and safetensors index
  // and shards) under tmp_/name.
  fs::path copy_model(const std::string& name, const std::string& fixture = "llama_gqa") {
    const fs::path dst = tmp_ / name;
    fs::create_directories(dst);
    for (const auto& e : fs::directory_iterator(kFixtures / fixture)) {
      const std::string f = e.path().filename().string();
      if (f == "config.json" || f.starts_with("model")) fs::copy_file(e.path(), dst / f);
    }
    return dst;
  }

  fs::path tmp_;
};

// Config edits: read, change, write back.
template <typename F>
void edit_json(const fs::path& p, F&& change) {
  nlohmann::json j = nlohmann::json::parse(read_text(p));
  change(j);
  write_text(p, j.dump(2));
}

// Header edits of a safetensors file; the data section is kept as it is
// (offsets count from its start, so a header of another length is fine).
template <typename F>
void edit_safetensors_header(const fs::path& p, F&& change) {
  const std::string bytes = read_text(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  change(header);
  const std::string text = header.dump();
  const uint64_t m = text.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  out += text;
  out += bytes.substr(8 + n);
  write_text(p, out);
}

inline uint64_t safetensors_header_bytes(const fs::path& p) {
  const std::string bytes = read_text(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return n;
}

// Exit code 1 (not killed by a limit, no signal), one "error: " line on stderr that contains every needle.
inline void expect_error(const CliResult& r, const std::vector<std::string>& needles) {
  EXPECT_TRUE(r.killed.empty()) << r;
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 1) << r;
  ASSERT_FALSE(r.err.empty()) << r;
  EXPECT_TRUE(r.err.starts_with("error: ")) << r;
  EXPECT_EQ(r.err.back(), '\n') << r;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr is not one line\n" << r;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "stderr does not name '" << n << "'\n" << r;
}

}  // namespace podkv::clitest
