// podkv serve: the OpenAI-compatible HTTP server (src/server) on one model and
// one KV cache. This layer parses the options, prints the start line and one
// line per request on stderr, and turns SIGINT/SIGTERM into a clean stop.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "backend/make_backend.h"
#include "commands.h"
#include "common.h"
#include "engine/runner.h"
#include "ops/matmul.h"
#include "server/chat_template.h"
#include "server/http_server.h"
#include "server/openai_api.h"
#include "server/serving_engine.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct ServeCommand {
  std::string model;
  KvOptions kv;
  std::string host = "127.0.0.1";
  int port = 8080;
  int64_t context = 4096;
  int threads = 0;
  int parallel = 4;
  std::string admit = "peak";
  std::string kv_memory;
  int queue = 64;
  int64_t prefill_chunk = 256;
  std::string api_key;
  std::string chat_template;
  std::string model_id;
  std::string device = "cpu";  // --device
  std::string cuda_weights = "bf16";
  int page_tokens = 0;  // --page-tokens (0: the device's default)
  std::string max_body = "8M";
};

std::string model_id_of(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing slash
  return std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
}

void log_request(const RequestLog& l) {
  std::string line = l.method + " " + l.path + " " + std::to_string(l.status);
  if (!l.id.empty()) line += " " + l.id;
  if (!l.finish_reason.empty()) {
    char buf[256];
    std::snprintf(buf, sizeof buf, " prompt=%lld completion=%lld queue=%.3fs ttft=%.3fs total=%.3fs",
                  static_cast<long long>(l.prompt_tokens), static_cast<long long>(l.completion_tokens),
                  l.queue_seconds, l.time_to_first_token, l.total_seconds);
    line += buf;
    line += " finish=" + l.finish_reason;
  }
  if (!l.error.empty()) line += " error=\"" + l.error + "\"";
  std::fprintf(stderr, "%s %s\n", l.remote.c_str(), line.c_str());
}

// SIGINT/SIGTERM write a byte to this pipe (write() is safe in a signal
// handler; threads that existed before main, such as OpenBLAS's, may take the
// signal, so masking it is not enough); a thread reads it and stops the server.
int stop_pipe[2] = {-1, -1};

void on_stop_signal(int) {
  const char byte = 1;
  [[maybe_unused]] const ssize_t n = write(stop_pipe[1], &byte, 1);
}

void run(ServeCommand& o) {
  if (o.context <= 0) throw Error("-c: context must be positive");
  if (o.parallel < 1) throw Error("--parallel: must be at least 1, got " + std::to_string(o.parallel));
  if (o.queue < 0) throw Error("--queue: must not be negative, got " + std::to_string(o.queue));
  if (o.prefill_chunk < 1) throw Error("--prefill-chunk: must be at least 1, got " + std::to_string(o.prefill_chunk));
  if (o.admit != "peak" && o.admit != "current") throw Error("--admit: must be peak or current, got '" + o.admit + "'");
  if (o.port < 0 || o.port > 65535) throw Error("--port: must be in [0, 65535], got " + std::to_string(o.port));
  const size_t max_body = parse_bytes(o.max_body, "--max-body");
  // A client gone mid-write must not kill the server with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  if (o.threads > 0) set_num_threads(o.threads);

  auto model = Model::load(o.model);
  auto tokenizer = load_model_tokenizer(*model);
  const ModelConfig& c = model->config();
  const int64_t context = std::min<int64_t>(o.context, c.max_position_embeddings);
  std::optional<float> tau;
  const KvLayout layout = kv_layout_from_options(o.kv, c, o.model, &tau);
  const KvDType dtype = kv_dtype_from_options(o.kv, *model);
  const int page = page_tokens_for(o.page_tokens, o.device);
  auto cache = o.kv_memory.empty()
                   ? make_cache(layout, context, o.parallel, o.prefill_chunk, dtype, page)
                   : std::make_unique<KvCache>(layout, parse_bytes(o.kv_memory, "--kv-memory"), page, dtype);
  auto backend = make_backend(o.device, *model, o.cuda_weights);
  Runner runner(*backend, *cache);
  runner.set_tau(tau);

  ApiConfig api_config;
  api_config.model_id = o.model_id.empty() ? model_id_of(o.model) : o.model_id;
  api_config.context = context;
  ResolvedChatTemplate chat = resolve_chat_template(o.chat_template, *model);
  api_config.chat = chat.chat;
  api_config.chat_unavailable = chat.unavailable;
  OpenAiApi api(tokenizer.get(), c, api_config);

  Metrics metrics;
  EngineOptions engine_options;
  engine_options.parallel = o.parallel;
  engine_options.admission = o.admit == "current" ? Admission::Current : Admission::Peak;
  engine_options.queue = o.queue;
  engine_options.prefill_chunk = o.prefill_chunk;
  ServingEngine engine(runner, tokenizer.get(), engine_options, metrics);
  HttpOptions http;
  http.host = o.host;
  http.port = o.port;
  http.api_key = o.api_key;
  http.max_body_bytes = max_body;
  HttpServer server(api, engine, metrics, http, log_request);
  const int port = server.bind();
  engine.start();

  if (pipe(stop_pipe) != 0) throw Error("cannot create a pipe for the stop signals");
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::thread signals([&] {
    char byte = 0;
    while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    server.stop();
  });
  std::fprintf(stderr,
               "podkv serve: listening on http://%s:%d (model %s, context %lld, kv %s %s, KV budget %.1f MiB = %zu "
               "pages, parallel %d, admit %s, queue %d, chat template %s)\n",
               o.host.c_str(), port, api_config.model_id.c_str(), static_cast<long long>(context), o.kv.policy.c_str(),
               kv_dtype_name(dtype), cache->budget_bytes() / 1048576.0, cache->num_pages(), o.parallel, o.admit.c_str(), o.queue,
               chat.chat ? chat_format_name(chat.chat->format) : "none");
  std::fflush(stderr);
  server.listen();  // returns after stop(), once the requests in flight are answered
  on_stop_signal(0);  // wakes the signal thread when the server stopped by itself
  signals.join();
  engine.stop();
  std::fprintf(stderr, "podkv serve: stopped\n");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeCommand>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  add_kv_options(*cmd, o->kv);
  cmd->add_option("--host", o->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "port to listen on (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("-c,--ctx-size", o->context, "context of one request: prompt + generated tokens (capped at the model's)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->add_option("--device", o->device, "where the forward runs: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  cmd->add_option("--page-tokens", o->page_tokens, "tokens per KV page (0: 16 on cpu, 64 on cuda)")->capture_default_str();
  cmd->add_option("--parallel", o->parallel, "sequences running at once")->capture_default_str();
  cmd->add_option("--admit", o->admit,
                  "peak: start a request when its peak KV pages fit (never preempted); current: when its prompt fits "
                  "(more at once; the newest is preempted and recomputed when pages run out)")
      ->capture_default_str();
  cmd->add_option("--kv-memory", o->kv_memory, "KV cache budget (e.g. 512M; default: --parallel full contexts)");
  cmd->add_option("--queue", o->queue, "requests waiting beyond the running ones; more get 503")->capture_default_str();
  cmd->add_option("--prefill-chunk", o->prefill_chunk, "longest prompt chunk, and the prompt tokens one step takes")
      ->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' (all endpoints but /health)");
  cmd->add_option("--chat-template", o->chat_template,
                  std::string("chat template: ") + known_chat_formats() + ", or a file with a Jinja template of one of these");
  cmd->add_option("--model-id", o->model_id, "model name in /v1/models and responses (default: the model's file or folder name)");
  cmd->add_option("--max-body", o->max_body, "largest request body (413 above)")->capture_default_str();
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
