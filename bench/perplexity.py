"""Perplexity benchmark: the same model, text and context size through Mantle's likelihood API and
through llama.cpp's own `llama-perplexity`.

llama-perplexity tokenizes the text (with the model's BOS when it adds one), cuts it into chunks of
`context` tokens, puts the BOS first in every chunk, and scores the second half of each chunk given
everything before it in the chunk. This script does exactly that through Mantle: `/tokenize` for
the tokens, then one `/v1/completions` request per chunk with `echo`, `logprobs` and `max_tokens`
0, summing the prompt log probabilities of the same positions. The two perplexities must agree
within 1%; the table also gives tokens scored per second (ratio Mantle / llama-perplexity).

Mantle runs the file as it is when a deployment holds one sequence, and from its F16 expansion
when it batches (Q4_1 has no batched CPU kernel): the second Mantle row is that form, four chunks
at a time, so the table shows what the expansion costs in perplexity.

Usage: python bench/perplexity.py --mantle BIN --llama-perplexity BIN --gguf FILE --corpus FILE
"""

import argparse
import concurrent.futures
import gzip
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import start_mantle  # noqa: E402


def corpus_text(path, docs):
    """The first `docs` SciFact abstracts, title then text, blank lines between."""
    parts = []
    with gzip.open(path, "rt") as f:
        for line in f:
            doc = json.loads(line)
            parts.append(f"{doc.get('title', '')}\n{doc.get('text', '')}".strip())
            if len(parts) == docs:
                break
    return "\n\n".join(parts) + "\n"


def llama_perplexity(binary, gguf, text_file, context, threads):
    started = time.perf_counter()
    run = subprocess.run([binary, "-m", gguf, "-f", text_file, "-c", str(context), "-b", str(context), "-t", str(threads), "-tb", str(threads)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    out = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(out[-3000:])
    ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", out).group(1))
    chunks = int(re.search(r"calculating perplexity over (\d+) chunks", out).group(1))
    return ppl, chunks, elapsed


def mantle_perplexity(url, token, model, text, context, concurrency):
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=600) as client:
        info = client.get(f"{url}/deployments/{model}/tokenizer_info", headers=headers).raise_for_status().json()
        tokens = client.post(f"{url}/deployments/{model}/tokenize", json={"prompt": text, "add_special_tokens": True}, headers=headers).raise_for_status().json()["tokens"]
        bos = None
        if info.get("bos_token"):
            bos = client.post(f"{url}/deployments/{model}/tokenize", json={"prompt": info["bos_token"], "add_special_tokens": False}, headers=headers).raise_for_status().json()["tokens"][0]
        adds_bos = bos is not None and tokens[:1] == [bos]
        n_chunks = len(tokens) // context
        first = context // 2

        def score(i):
            chunk = tokens[i * context : (i + 1) * context]
            if adds_bos:
                chunk[0] = bos
            body = {"model": model, "prompt": [chunk], "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0}
            logprobs = client.post(f"{url}/v1/completions", json=body, headers=headers).raise_for_status().json()["choices"][0]["logprobs"]["token_logprobs"]
            return sum(logprobs[first + 1 :]), len(logprobs) - first - 1

        # Warm: the model loads on first use, outside the timing.
        score(0)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(score, range(n_chunks)))
        elapsed = time.perf_counter() - started
    total = sum(r[0] for r in results)
    count = sum(r[1] for r in results)
    return math.exp(-total / count), n_chunks, elapsed, count


COUNTRIES = ["France", "Italy", "Japan", "Spain", "Germany", "Egypt", "Canada", "Brazil", "Kenya", "India", "Chile", "Norway", "Peru", "Greece", "Ireland", "Poland"]


def eval_throughput(url, token, model, items=32, concurrency=4):
    """Items per second of an Evals API completions run (sampling and a string check), against
    the same chat requests sent directly by a client with the run's concurrency."""
    headers = {"Authorization": f"Bearer {token}"}
    questions = [f"What is the capital of {COUNTRIES[i % len(COUNTRIES)]}? (#{i})" for i in range(items)]
    messages = lambda q: [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": q}]
    with httpx.Client(timeout=600) as client:
        def direct(q):
            body = {"model": model, "messages": messages(q), "max_tokens": 16, "temperature": 0, "seed": 42}
            client.post(f"{url}/v1/chat/completions", json=body, headers=headers).raise_for_status()

        def direct_rate():
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(direct, questions))
            return items / (time.perf_counter() - started)

        # Direct requests before and after the run, so warm-up favours neither side.
        before = direct_rate()
        spec = {"name": "capitals", "data_source_config": {"type": "custom", "item_schema": {"type": "object"}}, "testing_criteria": [{"type": "string_check", "name": "names it", "input": "{{sample.output_text}}", "reference": "capital", "operation": "ilike"}]}
        created = client.post(f"{url}/v1/evals", json=spec, headers=headers).raise_for_status().json()
        source = {"type": "file_content", "content": [{"item": {"q": q}} for q in questions]}
        run = {"data_source": {"type": "completions", "model": model, "source": source, "input_messages": {"type": "template", "template": [messages("{{item.q}}")[0], {"role": "user", "content": "{{item.q}}"}]}, "sampling_params": {"temperature": 0, "max_completion_tokens": 16}}}
        started = time.perf_counter()
        made = client.post(f"{url}/v1/evals/{created['id']}/runs", json=run, headers=headers).raise_for_status().json()
        while True:
            state = client.get(f"{url}/v1/evals/{created['id']}/runs/{made['id']}", headers=headers).raise_for_status().json()
            if state["status"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        eval_rate = items / (time.perf_counter() - started)
        assert state["status"] == "completed" and state["result_counts"]["total"] == items, state
        after = direct_rate()
    return eval_rate, (before + after) / 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", required=True)
    parser.add_argument("--llama-perplexity", required=True)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mantle-bench-ppl-"))
    text_file = work / "text.txt"
    text = corpus_text(args.corpus, args.docs)
    text_file.write_text(text)

    peer_ppl, peer_chunks, peer_seconds = llama_perplexity(args.llama_perplexity, args.gguf, str(text_file), args.context, args.threads)
    scored_per_chunk = args.context - args.context // 2 - 1
    peer_rate = peer_chunks * scored_per_chunk / peer_seconds

    rows = []
    for label, parallel in (("as stored (1 sequence)", 1), ("F16 expansion (4 sequences)", 4)):
        run_dir = work / f"mantle-{parallel}"
        run_dir.mkdir()
        proc, url, token, model = start_mantle(args.mantle, args.gguf, args.threads, parallel, args.context, run_dir)
        try:
            ppl, chunks, seconds, count = mantle_perplexity(url, token, model, text, args.context, parallel)
            if parallel > 1:
                eval_rates = eval_throughput(url, token, model, concurrency=parallel)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        rows.append((label, ppl, chunks, count / seconds))

    print(f"\nPerplexity of {Path(args.gguf).name}, {args.docs} SciFact abstracts ({len(text)} bytes), context {args.context}, {args.threads} threads\n")
    print(f"| runner | chunks | PPL | vs llama-perplexity | tokens scored/s | ratio |")
    print(f"|---|---:|---:|---:|---:|---:|")
    print(f"| llama-perplexity | {peer_chunks} | {peer_ppl:.4f} | 1.0000 | {peer_rate:.0f} | 1.00 |")
    for label, ppl, chunks, rate in rows:
        print(f"| Mantle, {label} | {chunks} | {ppl:.4f} | {ppl / peer_ppl:.4f} | {rate:.0f} | {rate / peer_rate:.2f} |")
    eval_rate, direct_rate = eval_rates
    print(f"\nEvals API, completions run of 32 items (16 tokens each, a string check), 4 at a time: {eval_rate:.2f} items/s; the same requests sent directly by a client: {direct_rate:.2f}/s (ratio {eval_rate / direct_rate:.2f})")
    worst = max(abs(ppl / peer_ppl - 1) for _, ppl, _, _ in rows[:1])
    print(f"\nMantle (same weights) differs from llama-perplexity by {worst * 100:.3f}% (target: under 1%).")
    if worst > 0.01:
        sys.exit(1)


if __name__ == "__main__":
    main()
