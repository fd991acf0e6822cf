#include "server/http_server.h"

#if PODKV_HAVE_HTTPLIB

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace podkv {

using nlohmann::json;

namespace {

// What the request being answered on this thread did; the logger (called on
// the same thread once the response is written) hands it on.
thread_local RequestLog current_log;

constexpr std::chrono::milliseconds kPoll{100};

std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/models", "/health", "/metrics"})
    if (path == known) return path;
  return "other";
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(dump_json(error_body(e)), "application/json");
  current_log.error = e.what();
}

// cpp-httplib 0.11 gives a handler neither its socket nor a way to ask
// whether the client is still there. The connection is the one socket whose
// two ends are the request's local and remote address, so it is found among
// the process's descriptors once; while the handler runs, the descriptor stays
// this connection's.
int find_connection_fd(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    auto port_of = [](const sockaddr_storage& a) -> int {
      if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
      if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
      return -1;
    };
    auto addr_of = [](const sockaddr_storage& a) -> std::string {
      char buf[INET6_ADDRSTRLEN] = {};
      if (a.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
      else if (a.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, buf, sizeof buf);
      return buf;
    };
    if (port_of(local) == req.local_port && port_of(peer) == req.remote_port && addr_of(peer) == req.remote_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// The client closed its end (a clean close reads as 0 bytes; anything it sent
// after the request, such as the next request on a kept-alive connection,
// stays unread).
bool client_gone(int fd) {
  if (fd < 0) return false;
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void fill_log(const PreparedRequest& r, const RequestOutcome& o) {
  current_log.id = r.id;
  current_log.prompt_tokens = o.prompt_tokens;
  current_log.completion_tokens = static_cast<int64_t>(o.generated_ids.size());
  current_log.queue_seconds = o.queue_seconds;
  current_log.time_to_first_token = o.time_to_first_token;
  current_log.total_seconds = o.total_seconds;
  current_log.finish_reason = o.cancelled ? "cancelled" : !o.error.empty() ? "error" : o.finish_reason;
  if (!o.error.empty()) current_log.error = o.error;
}

}  // namespace

struct HttpServer::Impl {
  OpenAiApi& api;
  ServingEngine& engine;
  Metrics& metrics;
  HttpOptions options;
  std::function<void(const RequestLog&)> on_request;
  httplib::Server server;
  int listen_fd = -1;

  Impl(OpenAiApi& a, ServingEngine& e, Metrics& m, HttpOptions o, std::function<void(const RequestLog&)> log)
      : api(a), engine(e), metrics(m), options(std::move(o)), on_request(std::move(log)) {}

  void routes();
  void completion(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(const httplib::Request& req, httplib::Response& res, std::shared_ptr<PreparedRequest> prepared,
              std::shared_ptr<RequestChannel> channel);
};

void HttpServer::Impl::routes() {
  const int threads = options.threads > 0 ? options.threads
                                          : std::min(1024, engine.options().parallel + engine.options().queue + 8);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_payload_max_length(options.max_body_bytes);
  server.set_tcp_nodelay(true);  // stream each token as it comes
  // The listening socket, so that bind() can widen its backlog.
  server.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = sock;
  });

  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    current_log = RequestLog{};
    current_log.method = req.method;
    current_log.path = req.path;
    current_log.remote = req.remote_addr + ":" + std::to_string(req.remote_port);
    if (options.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") != "Bearer " + options.api_key) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' with the "
                                    "server's --api-key",
                               "", "authentication_error"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors httplib answers itself (unknown path 404, body too large 413, ...) get an OpenAI error object too.
  server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                         httplib::Response& res) {
    if (!res.body.empty() || res.is_chunked_content_provider_ || res.content_provider_)
      return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP " + std::to_string(res.status);
    if (res.status == 404) message = "no such endpoint: " + req.method + " " + req.path;
    else if (res.status == 413)
      message = "the request body is over the size limit of " + std::to_string(options.max_body_bytes) + " bytes";
    else if (res.status == 405) message = "method not allowed: " + req.method + " " + req.path;
    else if (res.status == 400) message = "malformed HTTP request";
    send_error(res, ApiError(res.status, message));
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "internal error: " + what));
  });
  server.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    current_log.status = res.status;
    metrics.count_request(endpoint_label(current_log.path), res.status);
    if (on_request) on_request(current_log);
    current_log = RequestLog{};
  });

  server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  auto models = [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump_json(api.models()), "application/json");
  };
  server.Get("/v1/models", models);
  server.Get("/models", models);
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(engine.gauges()), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Post("/v1/completions",
              [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, false); });
  server.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { completion(req, res, true); });
}

void HttpServer::Impl::completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  std::shared_ptr<PreparedRequest> prepared;
  std::shared_ptr<RequestChannel> channel;
  try {
    prepared = std::make_shared<PreparedRequest>(api.prepare(req.body, chat));
    current_log.id = prepared->id;
    channel = engine.submit(prepared->generate);
  } catch (const ApiError& e) {
    send_error(res, e);
    return;
  } catch (const SubmitError& e) {
    if (e.status() == 503) res.set_header("Retry-After", "1");
    send_error(res, ApiError(e.status(), e.what(), e.status() == 400 ? "max_tokens" : "",
                             e.status() == 503 ? "server_overloaded" : ""));
    return;
  }
  if (prepared->api.stream) {
    stream(req, res, prepared, channel);
    return;
  }
  const int fd = find_connection_fd(req);
  std::string text;
  while (!channel->wait(kPoll, text)) {
    text.clear();
    if (!channel->cancelled() && client_gone(fd)) channel->cancel();
  }
  const RequestOutcome& o = channel->outcome();
  fill_log(*prepared, o);
  if (o.cancelled) {
    res.status = 499;  // the client closed the connection (nginx's code); nobody reads this
    return;
  }
  if (!o.error.empty()) {
    send_error(res, ApiError(500, o.error));
    return;
  }
  res.set_content(dump_json(api.response(*prepared, o)), "application/json");
}

void HttpServer::Impl::stream(const httplib::Request& req, httplib::Response& res,
                              std::shared_ptr<PreparedRequest> prepared, std::shared_ptr<RequestChannel> channel) {
  struct State {
    bool started = false;
    int fd = -1;
  };
  auto state = std::make_shared<State>();
  state->fd = find_connection_fd(req);
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, prepared, channel, state](size_t, httplib::DataSink& sink) {
        // The client is gone: stop the sequence and wait for the engine to
        // drop it, so that the log line is final.
        auto abandon = [&] {
          channel->cancel();
          std::string ignored;
          while (!channel->wait(kPoll, ignored)) ignored.clear();
          fill_log(*prepared, channel->outcome());
          return false;
        };
        auto send = [&](const std::string& event) { return sink.write(event.data(), event.size()); };
        if (!state->started) {
          state->started = true;
          if (prepared->api.chat && !send(sse_event(api.role_chunk(*prepared)))) return abandon();
        }
        std::string text;
        std::vector<int32_t> ids;
        const bool finished = channel->wait(kPoll, text, &ids);
        if ((!text.empty() || !ids.empty()) && !send(sse_event(api.text_chunk(*prepared, text, ids)))) return abandon();
        if (!finished) return client_gone(state->fd) ? abandon() : true;
        const RequestOutcome& o = channel->outcome();
        fill_log(*prepared, o);
        if (o.cancelled) return false;
        if (!o.error.empty()) {
          if (!send(sse_event(error_body(ApiError(500, o.error))))) return false;
        } else {
          if (!send(sse_event(api.finish_chunk(*prepared, o)))) return false;
          if (prepared->api.include_usage && !send(sse_event(api.usage_chunk(*prepared, o)))) return false;
        }
        if (!send(sse_done())) return false;
        sink.done();
        return true;
      },
      [channel](bool success) {
        // The response ended early (write failed, server stopping): stop the sequence.
        if (!success) channel->cancel();
      });
}

HttpServer::HttpServer(OpenAiApi& api, ServingEngine& engine, Metrics& metrics, HttpOptions options,
                       std::function<void(const RequestLog&)> on_request)
    : impl_(std::make_unique<Impl>(api, engine, metrics, std::move(options), std::move(on_request))) {
  impl_->routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const HttpOptions& o = impl_->options;
  int port = o.port;
  if (o.port == 0) {
    port = impl_->server.bind_to_any_port(o.host);
    if (port <= 0) throw Error("--host " + o.host + ": cannot listen on any port");
  } else if (!impl_->server.bind_to_port(o.host, o.port)) {
    throw Error("--host " + o.host + " --port " + std::to_string(o.port) +
                ": cannot listen there (in use, or not an address of this machine)");
  }
  // Debian's compiled cpp-httplib listens with a backlog of 5: a burst of
  // more new connections than that, while the accepting thread waits for a
  // core, overflows it, and the kernel drops their handshakes (the clients
  // retry after 1, 2, 4 ... s, or time out). listen() again on the listening
  // socket only changes the backlog (to the system's cap, somaxconn).
  if (impl_->listen_fd >= 0 && ::listen(impl_->listen_fd, SOMAXCONN) != 0)
    throw Error("--port " + std::to_string(port) + ": cannot widen the listen backlog");
  return port;
}

void HttpServer::listen() { impl_->server.listen_after_bind(); }

void HttpServer::stop() { impl_->server.stop(); }

}  // namespace podkv

#else  // built without cpp-httplib: the server says so instead of the build failing

#include "util/error.h"

namespace podkv {

struct HttpServer::Impl {};

HttpServer::HttpServer(OpenAiApi&, ServingEngine&, Metrics&, HttpOptions, std::function<void(const RequestLog&)>) {
  throw Error("podkv serve: this build has no HTTP library (install Debian's libcpp-httplib-dev, then rebuild)");
}
HttpServer::~HttpServer() = default;
int HttpServer::bind() { return 0; }
void HttpServer::listen() {}
void HttpServer::stop() {}

}  // namespace podkv

#endif  // PODKV_HAVE_HTTPLIB
