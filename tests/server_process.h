// `podkv serve` as a child process on a free loopback port (--port 0; the port
// is read from its start line), and small HTTP helpers over cpp-httplib's
// client for the end-to-end tests.
#pragma once

#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <regex>
#include <thread>

#include "cli_run.h"

namespace podkv::clitest {

class ServeProcess {
 public:
  // Starts `podkv serve ARGS --port 0` with its stderr in `dir`; waits for the start line.
  ServeProcess(const std::vector<std::string>& args, const fs::path& dir) {
    static std::atomic<int> counter{0};
    log_path_ = dir / ("serve_stderr" + std::to_string(counter++));
    std::vector<std::string> argv_s = {PODKV_CLI_PATH, "serve", "--host", "127.0.0.1", "--port", "0"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      const int err = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int null = open("/dev/null", O_RDWR);
      if (err < 0 || null < 0) _exit(200);
      dup2(null, 0);
      dup2(null, 1);
      dup2(err, 2);
      setenv("OMP_NUM_THREADS", "1", 1);
      setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
      execv(argv[0], argv.data());
      _exit(201);
    }
    const std::regex start("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 600 && port_ == 0; ++i) {
      std::smatch m;
      const std::string text = log();
      if (std::regex_search(text, m, start)) port_ = std::stoi(m[1]);
      else if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      } else std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ServeProcess(const ServeProcess&) = delete;
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
    }
  }

  bool started() const { return port_ > 0; }
  int port() const { return port_; }
  std::string log() const { return read_text(log_path_); }

  std::unique_ptr<httplib::Client> client(const std::string& api_key = "") const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(60, 0);
    c->set_write_timeout(10, 0);
    if (!api_key.empty()) c->set_bearer_token_auth(api_key.c_str());
    return c;
  }

  // SIGTERM, then the exit code (-1 when it did not exit by itself within 20 s).
  int stop() {
    if (pid_ <= 0) return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 400; ++i) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  fs::path log_path_;
  pid_t pid_ = -1;
  int status_ = 0;
  int port_ = 0;
};

struct HttpReply {
  int status = 0;  // 0: no reply (connection failed)
  std::string error;  // then cpp-httplib's reason (Connection, Read, ...)
  std::string body;
  httplib::Headers headers;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

// A reply, or why none came (httplib's error as the body).
inline HttpReply to_reply(const httplib::Result& res) {
  HttpReply r;
  if (res) {
    r.status = res->status;
    r.body = res->body;
    r.headers = res->headers;
  } else {
    r.error = httplib::to_string(res.error());
    r.body = "no reply: " + r.error;
  }
  return r;
}

inline HttpReply post(httplib::Client& c, const std::string& path, const std::string& body) {
  return to_reply(c.Post(path.c_str(), body, "application/json"));
}

inline HttpReply get(httplib::Client& c, const std::string& path) { return to_reply(c.Get(path.c_str())); }

// The JSON objects of the `data: {...}` events of a server-sent-event body;
// `done` says whether the last event was `data: [DONE]`.
inline std::vector<nlohmann::json> sse_events(const std::string& body, bool* done) {
  std::vector<nlohmann::json> events;
  *done = false;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.empty()) continue;
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_FALSE(*done) << "an event after [DONE]";
    const std::string data = event.substr(6);
    if (data == "[DONE]") *done = true;
    else events.push_back(nlohmann::json::parse(data));
  }
  return events;
}

// The value of a Prometheus sample line "NAME VALUE" (NAME with its labels), -1 when absent.
inline double metric(const std::string& text, const std::string& name) {
  const std::string key = "\n" + name + " ";
  const size_t at = ("\n" + text).find(key);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + key.size() - 1));
}

}  // namespace podkv::clitest
