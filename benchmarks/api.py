"""Samples/s through the openai backend against a naive sequential client, same server, same run.

    python benchmarks/api.py [--server latency|llamacpp] [--requests 64] [--concurrency 8]
                             [--latency 0.1] [--tokens 8]

`latency`: an OpenAI-compatible server on loopback that answers every request after
`--latency` seconds, many at a time (as a hosted API does), so the ratio shows what the
client's concurrency buys. `llamacpp`: llama-cpp-python's server with the embedded
SmolLM2 GGUF (2 threads), which computes one request at a time: the ratio is bounded by
the server, not the client. Both clients send the same payloads (one sample per request,
its own seed); the last line is one JSON object {"sequential_s", "backend_s", "ratio"}.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback server the tests use


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llamacpp():
    from detoxkit.backends.hf.embedded import SMOLLM2_135M

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                             str(SMOLLM2_135M.source_files()[0]), "--model_alias", "smollm2",
                             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama.cpp server did not start")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=("latency", "llamacpp"), default="latency")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.1, help="latency server: seconds per answer")
    ap.add_argument("--tokens", type=int, default=8)
    args = ap.parse_args(argv)

    import httpx

    from detoxkit.backends import Request, SamplingConfig
    from detoxkit.backends.openai import OpenAIBackend
    from detoxkit.http import RetryPolicy
    from detoxkit.methods import build_method

    proc = fake = None
    if args.server == "llamacpp":
        proc, url = start_llamacpp()
    else:
        from fault_api_server import FaultAPIServer

        fake = FaultAPIServer(latency=args.latency).__enter__()
        url = fake.url
    try:
        prompts = [f"Prompt number {i}: the weather today is" for i in range(args.requests)]
        sampling = SamplingConfig(num_samples=1, max_new_tokens=args.tokens, seed=0)
        backend = OpenAIBackend("smollm2", base_url=url,
                                policy=RetryPolicy(concurrency=args.concurrency, timeout=600))
        requests = [Request(f"p{i}", [], [0], text) for i, text in enumerate(prompts)]
        payloads = [backend._payload(r, [0], sampling) for r in requests]

        t0 = time.perf_counter()
        with httpx.Client(base_url=url, timeout=600) as client:  # the naive client: one at a time
            for p in payloads:
                client.post("/completions", json=p).raise_for_status()
        sequential = time.perf_counter() - t0

        t0 = time.perf_counter()
        samples = backend.generate(requests, sampling, build_method("none"))
        concurrent = time.perf_counter() - t0
        assert not any(s.error for s in samples), [s.error for s in samples if s.error][:3]
    finally:
        if fake:
            fake.__exit__(None, None, None)
        if proc:
            proc.terminate()
    ratio = sequential / concurrent
    print(f"{args.server} server, {args.requests} requests x {args.tokens} tokens, "
          f"concurrency {args.concurrency}")
    print(f"sequential client {sequential:7.2f} s  {args.requests / sequential:6.1f} samples/s")
    print(f"openai backend    {concurrent:7.2f} s  {args.requests / concurrent:6.1f} samples/s")
    print(f"ratio {ratio:.2f}x (target >= 4x at concurrency 8 where the server is not the bound)")
    print(json.dumps({"sequential_s": round(sequential, 3), "backend_s": round(concurrent, 3),
                      "ratio": round(ratio, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
