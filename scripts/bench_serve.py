#!/usr/bin/env python3
"""Load benchmark of a running `podkv serve` over loopback (standard library only).

For each concurrency level, C client threads send streamed /v1/completions
requests back to back (mixed prompt and output lengths, fixed seed) until
--requests have been answered, and the script prints requests/s, output
tokens/s, time to first token and inter-token latency at p50 and p99, and
errors, as a markdown table (and JSON with --json).

    build/podkv serve -m models/podkv-ref --kv pod --parallel 16 &
    scripts/bench_serve.py --url http://127.0.0.1:8080 --concurrency 1,4,16 --requests 64
"""
import argparse
import http.client
import json
import random
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


def run_level(args, concurrency):
    rng = random.Random(1234)
    bodies = []
    for i in range(args.requests):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, args.max_prompt_words)))
        bodies.append({"prompt": prompt, "max_tokens": rng.randint(args.min_tokens, args.max_tokens),
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
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

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ok = len(ttfts)
    return {"concurrency": concurrency, "requests": ok, "errors": errors[0], "seconds": seconds,
            "requests_per_s": ok / seconds, "output_tokens_per_s": tokens[0] / seconds,
            "ttft_p50_ms": 1e3 * percentile(ttfts, 50), "ttft_p99_ms": 1e3 * percentile(ttfts, 99),
            "itl_p50_ms": 1e3 * percentile(itls, 50), "itl_p99_ms": 1e3 * percentile(itls, 99)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    p.add_argument("--min-tokens", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-prompt-words", type=int, default=64)
    p.add_argument("--api-key", default="")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = [run_level(args, int(c)) for c in args.concurrency.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| concurrency | requests | errors | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| {concurrency} | {requests} | {errors} | {requests_per_s:.2f} | {output_tokens_per_s:.1f} | "
              "{ttft_p50_ms:.1f} | {ttft_p99_ms:.1f} | {itl_p50_ms:.1f} | {itl_p99_ms:.1f} |".format(**r))


if __name__ == "__main__":
    main()
