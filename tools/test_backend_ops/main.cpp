// podkv_test_backend_ops: every op of every available backend (backend/backend_ops.h)
// against plain double-precision references written in this program, over odd
// sizes; one line per case, a non-zero exit on any failure. --perf times the
// ops on larger sizes instead and prints GB/s or GFLOP/s with a repro line.
//
//   podkv_test_backend_ops [--perf] [--op NAME] [--backend NAME] [-t THREADS]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "harness.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace {

using podkv::backend_test::Options;

const char* const kOps[] = {"embedding", "rms_norm", "rope", "silu_mul", "add", "matmul", "gather_rows", "kv_write",
                            "attention", "decode_chain"};

void usage(FILE* to) {
  std::fprintf(to,
               "usage: podkv_test_backend_ops [--perf] [--op NAME] [--backend NAME] [-t THREADS]\n"
               "  --perf        time each op on larger sizes (GB/s, GFLOP/s) instead of checking it\n"
               "  --op NAME     only this op:");
  for (const char* op : kOps) std::fprintf(to, " %s", op);
  std::fprintf(to, "\n  --backend N   only this backend (available:");
  for (const std::string& b : podkv::backend_ops_names()) std::fprintf(to, " %s", b.c_str());
  std::fprintf(to, ")\n  -t THREADS    CPU threads (default: all cores)\n");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw podkv::Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--perf") o.perf = true;
    else if (a == "--op") o.op = value();
    else if (a == "--backend") o.backend = value();
    else if (a == "-t" || a == "--threads") o.threads = std::atoi(value().c_str());
    else if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else throw podkv::Error("unknown option '" + a + "' (see --help)");
  }
  bool known = o.op.empty();
  for (const char* op : kOps) known = known || o.op == op;
  if (!known) throw podkv::Error("--op: unknown op '" + o.op + "' (see --help)");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace podkv::backend_test;
  try {
    const Options options = parse(argc, argv);
    if (options.threads > 0) podkv::set_num_threads(options.threads);
    Reporter report(options);
    int backends = 0;
    for (const std::string& name : podkv::backend_ops_names()) {
      if (!options.backend.empty() && options.backend != name) continue;
      ++backends;
      std::unique_ptr<podkv::BackendOps> ops = podkv::make_backend_ops(name);
      if (options.perf) {
        run_perf(*ops, options);
        continue;
      }
      run_op_cases(*ops, report);
      run_kv_cases(*ops, report);
      run_chain_cases(*ops, report);
    }
    if (backends == 0) throw podkv::Error("--backend: no backend '" + options.backend + "' (see --help)");
    if (!options.perf) {
      std::printf("%d cases, %d failed\n", report.cases(), report.failures());
      return report.failures() == 0 ? 0 : 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
