// The HTTP front of `podkv serve` (cpp-httplib): routes, API-key check, body
// size limit, non-streamed and server-sent-event responses, cancellation of a
// request whose client disconnected, and one RequestLog per answered request
// handed to the program (the library prints nothing).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/serving_engine.h"

namespace podkv {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                       // 0: any free port (bind() says which)
  std::string api_key;                   // empty: no check
  size_t max_body_bytes = 8u << 20;      // larger bodies get 413
  int threads = 0;                       // HTTP worker threads (0: parallel + queue + 8)
};

struct RequestLog {
  std::string id;      // the completion id, when one was made
  std::string method, path, remote;
  int status = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double queue_seconds = 0, time_to_first_token = 0, total_seconds = 0;
  std::string finish_reason;  // stop, length, cancelled
  std::string error;          // the error message sent, if any
};

class HttpServer {
 public:
  HttpServer(OpenAiApi& api, ServingEngine& engine, Metrics& metrics, HttpOptions options,
             std::function<void(const RequestLog&)> on_request = {});
  ~HttpServer();

  // Binds the listening socket; returns the port. Throws Error when it cannot.
  int bind();
  // Serves until stop(); returns once the requests in flight are answered.
  void listen();
  // May be called from any thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace podkv
