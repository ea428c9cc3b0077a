"""Serving benchmark: Mantle against llama.cpp's own `llama-server` on the same GGUF, the same
threads and the same number of parallel sequences, driven by one load generator.

Each scenario streams chat completions with distinct ~150-token prompts and a fixed number of
output tokens (`ignore_eos`, which both servers accept) at 1, 4 and 16 concurrent streams, and
measures aggregate completion tokens/s and time to first token (p50, p99). A single stream also
gives prompt tokens/s (prompt tokens / time to first token) and decode tokens/s. The contenders
run one at a time (an idle server still disturbs the other), in alternating order between rounds,
and the table reports medians and Mantle / llama-server ratios.

Usage: python bench/serve.py --mantle BIN --llama-server BIN --gguf FILE [--rounds 1]
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import httpx

WORDS = (
    "river mountain engine harbor lantern orchard quarry meadow signal copper violet thunder "
    "garden ledger compass timber canyon beacon marble falcon glacier prairie velvet anchor "
    "saddle cobalt ember willow summit tundra archive cipher nectar pebble rampart spindle"
).split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def prompt(rng):
    """A distinct request of about 150 tokens."""
    notes = " ".join(rng.choice(WORDS) for _ in range(120))
    return [{"role": "user", "content": f"Summarize these field notes in plain words: {notes}"}]


async def one_stream(client, url, key, model, messages, max_tokens):
    started = time.perf_counter()
    first = None
    usage = None
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if first is None and (choice.get("delta") or {}).get("content"):
                    first = time.perf_counter()
    ended = time.perf_counter()
    if usage is None:
        raise RuntimeError("no usage chunk")
    return {"ttft": first - started, "total": ended - started, "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"], "decode": ended - first}


async def scenario(url, key, model, concurrency, requests, max_tokens, seed):
    rng = random.Random(seed)
    prompts = [prompt(rng) for _ in range(requests)]
    queue = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    results = []
    # A fresh connection per request: llama-server closes keep-alive connections after a few
    # requests, which a pooled client would trip over.
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker():
            while not queue.empty():
                messages = queue.get_nowait()
                results.append(await one_stream(client, url, key, model, messages, max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts = sorted(r["ttft"] for r in results)
    completion = sum(r["completion_tokens"] for r in results)
    return {
        "tok_s": completion / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, int(round(0.99 * (len(ttfts) - 1))))],
        "prompt_tok_s": statistics.median(r["prompt_tokens"] / r["ttft"] for r in results),
        "decode_tok_s": statistics.median((r["completion_tokens"] - 1) / r["decode"] for r in results),
        "completion_tokens": completion,
        "prompt_tokens": statistics.median(r["prompt_tokens"] for r in results),
    }


def start_mantle(binary, gguf, threads, parallel, context, workdir):
    port = free_port()
    data = Path(workdir) / "mantle-data"
    token = "bench-" + uuid.uuid4().hex
    env = dict(os.environ, MANTLE_ADMIN_TOKEN=token, RUST_LOG="warn")
    log = open(Path(workdir) / "mantle.log", "w")
    proc = subprocess.Popen([binary, "serve", "--data", str(data), "--addr", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    src = Path(workdir) / "smollm2"
    src.mkdir()
    try:
        os.link(gguf, src / Path(gguf).name)  # `mantle push` does not follow symlinks
    except OSError:
        shutil.copy(gguf, src)
    (src / "README.md").write_text("---\nlicense: apache-2.0\n---\n# SmolLM2\n")
    cli_env = dict(os.environ, MANTLE_URL=url, MANTLE_TOKEN=token)
    subprocess.run([binary, "push", str(src), "admin/smollm2"], check=True, env=cli_env, capture_output=True)
    subprocess.run([binary, "deploy", "bench", "admin/smollm2@main", "--context", str(context), "--max-batch", str(parallel), "--threads", str(threads)], check=True, env=cli_env, capture_output=True)
    return proc, url, token, "bench"


def start_llama_server(binary, gguf, threads, parallel, context):
    port = free_port()
    log = open(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1], "w")
    args = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads), "--parallel", str(parallel), "-c", str(context * parallel), "--no-webui"]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    return proc, url, "none", "smollm2"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", required=True)
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results = {"mantle": {}, "llama-server": {}}
    # One server at a time: an idle server still holds threads and memory that would disturb the
    # other's measurements. The order alternates between rounds.
    for round_ in range(args.rounds):
        for name in (["mantle", "llama-server"] if round_ % 2 == 0 else ["llama-server", "mantle"]):
            workdir = tempfile.mkdtemp(prefix="mantle-bench-")
            if name == "mantle":
                proc, url, key, model = start_mantle(args.mantle, args.gguf, args.threads, args.parallel, args.context, workdir)
            else:
                proc, url, key, model = start_llama_server(args.llama_server, args.gguf, args.threads, args.parallel, args.context)
            try:
                asyncio.run(scenario(url, key, model, 1, 1, 8, 0))  # warm up (Mantle loads on first use)
                for concurrency in concurrencies:
                    requests = max(3, 2 * concurrency)
                    measured = asyncio.run(scenario(url, key, model, concurrency, requests, args.max_tokens, seed=concurrency * 100 + round_))
                    results[name].setdefault(concurrency, []).append(measured)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, args)


def print_table(results, args):
    def med(name, concurrency, key):
        return statistics.median(r[key] for r in results[name][concurrency])

    print(f"\nSmolLM2-135M-Instruct Q4_1, {args.threads} threads, {args.parallel} parallel sequences, ~150-token prompts, {args.max_tokens} output tokens, medians of {args.rounds} round(s)\n")
    print(f"{'metric':<34} {'mantle':>10} {'llama-server':>13} {'ratio':>7}")
    rows = []
    concurrencies = sorted(results["mantle"])
    for c in concurrencies:
        rows.append((f"aggregate tok/s @ {c} streams", med("mantle", c, "tok_s"), med("llama-server", c, "tok_s"), True))
    for c in concurrencies:
        rows.append((f"TTFT p50 s @ {c} streams", med("mantle", c, "ttft_p50"), med("llama-server", c, "ttft_p50"), False))
        rows.append((f"TTFT p99 s @ {c} streams", med("mantle", c, "ttft_p99"), med("llama-server", c, "ttft_p99"), False))
    if 1 in results["mantle"]:
        rows.append(("single stream prompt tok/s", med("mantle", 1, "prompt_tok_s"), med("llama-server", 1, "prompt_tok_s"), True))
        rows.append(("single stream decode tok/s", med("mantle", 1, "decode_tok_s"), med("llama-server", 1, "decode_tok_s"), True))
    for label, ours, theirs, higher_better in rows:
        ratio = ours / theirs if theirs else float("nan")
        note = "" if higher_better else " (lower is better)"
        print(f"{label:<34} {ours:>10.2f} {theirs:>13.2f} {ratio:>6.2f}x{note}")
    prompt_tokens = {name: med(name, concurrencies[0], "prompt_tokens") for name in results}
    print("\nMantle runs a Q4_1/Q5_0/Q5_1 file from its F16 expansion when the deployment batches (runtime.expand_max_bytes); llama-server runs the file as it is.")
    print(f"\nprompt tokens per request (median): mantle {prompt_tokens['mantle']:.0f}, llama-server {prompt_tokens['llama-server']:.0f}")


if __name__ == "__main__":
    main()
