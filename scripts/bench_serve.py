#!/usr/bin/env python3
"""Load benchmark of `podkv serve` over loopback (standard library only).

For each concurrency level, client threads send streamed /v1/completions
requests back to back (mixed prompt and output lengths, fixed seed) until
--requests (at least twice the concurrency) have been answered, and the script
prints requests/s, output tokens/s, time to first token and inter-token
latency at p50 and p99, errors, and the most sequences that ran at once (from
/metrics, sampled every 50 ms) as a markdown table (and JSON with --json).

Against a running server:
    build/podkv serve -m models/podkv-ref --kv pod --parallel 16 &
    scripts/bench_serve.py --url http://127.0.0.1:8080 --concurrency 1,4,16 --requests 64
Or it starts one server per policy itself (same options, side by side):
    scripts/bench_serve.py --model models/podkv-ref --policies dense,pod -- --kv-memory 8M --parallel 256 --queue 512
A soak run: --soak SECONDS keeps --concurrency streams busy for that long and
samples the server's resident memory (VmRSS) every --rss-every seconds.
"""
import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.parse

WORDS = ("the ship sailed into a quiet harbour where the old man waited for news of his son "
         "and the morning light fell on the water like a promise kept").split()


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


def one_request(url, body, api_key):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        conn.close()
        return None
    stamps, tokens = [], 0
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        if event.get("choices") and event["choices"][0].get("text"):
            stamps.append(time.perf_counter())
    conn.close()
    end = time.perf_counter()
    ttft = (stamps[0] - start) if stamps else end - start
    itl = [b - a for a, b in zip(stamps, stamps[1:])]
    return ttft, itl, tokens, end - start


def make_body(rng, args):
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, args.max_prompt_words)))
    return {"prompt": prompt, "max_tokens": rng.randint(args.min_tokens, args.max_tokens),
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


def scrape(url, api_key=""):
    """The /metrics samples as {name: value}."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/metrics", headers={"Authorization": "Bearer " + api_key} if api_key else {})
    text = conn.getresponse().read().decode()
    conn.close()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


class RunningSampler:
    """Samples podkv_sequences_running every 50 ms while a level runs."""

    def __init__(self, url, api_key):
        self.url, self.api_key, self.max, self.stop = url, api_key, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.05):
            try:
                self.max = max(self.max, scrape(self.url, self.api_key).get("podkv_sequences_running", 0))
            except OSError:
                pass

    def finish(self):
        self.stop.set()
        self.thread.join()
        return int(self.max)


def run_level(args, concurrency):
    rng = random.Random(1234)
    bodies = []
    for i in range(max(args.requests, 2 * concurrency)):
        bodies.append(make_body(rng, args))
    lock = threading.Lock()
    next_index = [0]
    ttfts, itls, tokens, errors = [], [], [0], [0]

    def worker():
        while True:
            with lock:
                if next_index[0] >= len(bodies):
                    return
                body = bodies[next_index[0]]
                next_index[0] += 1
            try:
                r = one_request(args.url, body, args.api_key)
            except OSError:
                r = None
            with lock:
                if r is None:
                    errors[0] += 1
                else:
                    ttfts.append(r[0])
                    itls.extend(r[1])
                    tokens[0] += r[2]

    before = scrape(args.url, args.api_key)
    sampler = RunningSampler(args.url, args.api_key)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    max_running = sampler.finish()
    after = scrape(args.url, args.api_key)
    ok = len(ttfts)
    return {"concurrency": concurrency, "requests": ok, "errors": errors[0], "seconds": seconds,
            "max_running": max_running,
            "preemptions": int(after.get("podkv_preemptions_total", 0) - before.get("podkv_preemptions_total", 0)),
            "requests_per_s": ok / seconds, "output_tokens_per_s": tokens[0] / seconds,
            "ttft_p50_ms": 1e3 * percentile(ttfts, 50), "ttft_p99_ms": 1e3 * percentile(ttfts, 99),
            "itl_p50_ms": 1e3 * percentile(itls, 50), "itl_p99_ms": 1e3 * percentile(itls, 99)}


def soak(args, pid):
    """--concurrency streams for --soak seconds; VmRSS of `pid` every --rss-every seconds."""
    concurrency = int(args.concurrency.split(",")[0])
    deadline = time.perf_counter() + args.soak
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0, "tokens": 0}

    def worker(i):
        rng = random.Random(i)
        while time.perf_counter() < deadline:
            try:
                r = one_request(args.url, make_body(rng, args), args.api_key)
            except OSError:
                r = None
            with lock:
                if r is None:
                    counts["errors"] += 1
                else:
                    counts["ok"] += 1
                    counts["tokens"] += r[2]

    def rss_kib():
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    samples = []
    while time.perf_counter() < deadline:
        samples.append((round(time.perf_counter() - start), rss_kib(), counts["ok"], counts["errors"]))
        print("t=%4ds VmRSS %7d KiB requests %6d errors %d" % samples[-1], file=sys.stderr, flush=True)
        time.sleep(min(args.rss_every, max(0.0, deadline - time.perf_counter())))
    for t in threads:
        t.join()
    samples.append((round(time.perf_counter() - start), rss_kib(), counts["ok"], counts["errors"]))
    metrics = scrape(args.url, args.api_key)
    return {"concurrency": concurrency, "seconds": time.perf_counter() - start, "requests": counts["ok"],
            "errors": counts["errors"], "output_tokens": counts["tokens"], "rss_kib": samples,
            "max_running": int(metrics.get("podkv_sequences_running_max", 0)),
            "preemptions": int(metrics.get("podkv_preemptions_total", 0))}


def start_server(args, policy):
    """`podkv serve -m MODEL --kv POLICY --port 0 SERVE_ARGS`; returns (process, url)."""
    cmd = [args.podkv, "serve", "-m", args.model, "--kv", policy, "--port", "0"] + args.serve_args
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", line)
        if m:
            print(line.strip(), file=sys.stderr)
            # Drain the per-request log lines so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m.group(1)
    raise SystemExit("podkv serve did not start: " + " ".join(cmd))


def print_table(rows, policy_column):
    head = "| policy " if policy_column else ""
    print(head + "| concurrency | requests | errors | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | "
          "ITL p50 ms | ITL p99 ms | max running | preemptions |")
    print(("|---" if policy_column else "") + "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(("| {policy} " if policy_column else "").format(**r) +
              "| {concurrency} | {requests} | {errors} | {requests_per_s:.2f} | {output_tokens_per_s:.1f} | "
              "{ttft_p50_ms:.1f} | {ttft_p99_ms:.1f} | {itl_p50_ms:.1f} | {itl_p99_ms:.1f} | {max_running} | "
              "{preemptions} |".format(**r))


def main():
    argv = sys.argv[1:]
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="a running server (without --model)")
    p.add_argument("--model", help="start `podkv serve -m MODEL` per policy instead (options after --)")
    p.add_argument("--policies", default="dense,pod", help="with --model: one server per policy, one after the other")
    p.add_argument("--podkv", default="build/podkv")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level (at least 2x it)")
    p.add_argument("--min-tokens", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-prompt-words", type=int, default=64)
    p.add_argument("--api-key", default="")
    p.add_argument("--soak", type=float, default=0, help="seconds of a soak run at the first concurrency")
    p.add_argument("--rss-every", type=float, default=10, help="soak: seconds between VmRSS samples")
    p.add_argument("--pid", type=int, help="soak against --url: the server's process id")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.serve_args = serve_args
    results = []
    for policy in args.policies.split(",") if args.model else [None]:
        proc = None
        if policy:
            proc, args.url = start_server(args, policy)
        try:
            if args.soak:
                r = soak(args, proc.pid if proc else args.pid)
                r["policy"] = policy
                results.append(r)
            else:
                for c in args.concurrency.split(","):
                    r = run_level(args, int(c))
                    r["policy"] = policy
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
        finally:
            if proc:
                proc.terminate()
                proc.wait()
    if args.json or args.soak:
        print(json.dumps(results, indent=1))
    else:
        print_table(results, bool(args.model))


if __name__ == "__main__":
    main()
