"""What structured output costs in decode speed: single-stream decode tokens/s of grammar-
constrained answers (JSON mode, a JSON schema whose answer is mostly one long string, a schema
whose answer is mostly structure, a forced tool call) against free text, on Mantle and on
llama.cpp's llama-server (whose `response_format` turns the schema into a GBNF grammar), same
model, same prompts, greedy, one server at a time, rounds alternated. Decode rate is
(completion tokens - 1) / (time of the last token - time of the first), from the SSE stream.

With `--baseline BIN` instead of `--llama-server`, the peer is another Mantle binary (say, the
previous commit's), which compares two versions of Mantle's constrained decoding.

Usage: python bench/structured.py --mantle BIN (--llama-server BIN | --baseline BIN) --gguf FILE [--rounds 3] [--max-tokens 160] [--streams 1]
"""

import argparse
import concurrent.futures
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve import start_llama_server, start_mantle  # noqa: E402

ROWS = {
    "type": "object",
    "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}, "score": {"type": "number"}, "ok": {"type": "boolean"}}, "required": ["id", "score", "ok"], "additionalProperties": False}}},
    "required": ["rows"],
    "additionalProperties": False,
}
STORY = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60}, "story": {"type": "string", "minLength": 500}}, "required": ["title", "story"], "additionalProperties": False}
TOOL = {"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "max_results": {"type": "integer"}}, "required": ["query", "max_results"], "additionalProperties": False}}}


def user(text):
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": text}]


WORKLOADS = [
    ("free text (ignore_eos)", dict(messages=user("Write a long story about a dragon."), ignore_eos=True), True),
    ("json_object", dict(messages=user("Describe three famous people as JSON."), response_format={"type": "json_object"}), True),
    ("json_schema, mostly one string", dict(messages=user("Write a long, detailed story of at least five paragraphs about a dragon who learns to read, as JSON with a title and the story."), response_format={"type": "json_schema", "json_schema": {"name": "story", "schema": STORY}}), True),
    ("json_schema, mostly structure", dict(messages=user("List forty rows of test data as JSON."), response_format={"type": "json_schema", "json_schema": {"name": "rows", "schema": ROWS}}), True),
    ("forced tool call (required)", dict(messages=user("Search for the ten best dragon stories ever written, please."), tools=[TOOL], tool_choice="required"), False),
]


def stream_rate(url, token, model, body, max_tokens):
    """(decode tokens/s, completion tokens) of one streamed answer, on a connection of its own
    (llama-server closes kept-alive connections after a few requests)."""
    payload = dict(body, model=model, max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True})
    times, usage = [], None
    with httpx.Client(timeout=300) as client, client.stream("POST", url + "/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {token}"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls"):
                    times.append(time.perf_counter())
    tokens = usage["completion_tokens"] if usage else len(times)
    if len(times) < 2 or tokens < 2:
        return None, tokens
    return (tokens - 1) / (times[-1] - times[0]), tokens


def concurrent_rate(url, token, model, body, max_tokens, streams):
    """(aggregate decode tokens/s, tokens of one answer) of `streams` identical answers at once."""
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda _: stream_rate(url, token, model, body, max_tokens), range(streams)))
    rates = [rate for rate, _ in results if rate]
    return (sum(rates) if len(rates) == streams else None), results[0][1]


def run_server(kind, args, workdir):
    if kind in ("mantle", "baseline"):
        binary = args.mantle if kind == "mantle" else args.baseline
        proc, url, token, model = start_mantle(binary, args.gguf, args.threads, args.streams, 2048, workdir)
    else:
        proc, url, token, model = start_llama_server(args.llama_server, args.gguf, args.threads, args.streams, 2048)
    results = {}
    try:
        stream_rate(url, token, model, WORKLOADS[0][1], 8)  # load and warm up
        for name, body, peer in WORKLOADS:
            if kind == "llama-server" and not peer:
                continue
            results[name] = concurrent_rate(url, token, model, body, args.max_tokens, args.streams)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", required=True)
    parser.add_argument("--llama-server")
    parser.add_argument("--baseline", help="another mantle binary as the peer, instead of llama-server")
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--streams", type=int, default=1, help="identical answers at once (the server batches them)")
    args = parser.parse_args()
    if bool(args.llama_server) == bool(args.baseline):
        parser.error("give exactly one of --llama-server and --baseline")
    peer = "baseline" if args.baseline else "llama-server"
    rates = {(kind, name): [] for kind in ("mantle", peer) for name, _, _ in WORKLOADS}
    tokens = {}
    for round_ in range(args.rounds):
        for kind in (("mantle", peer) if round_ % 2 == 0 else (peer, "mantle")):
            workdir = tempfile.mkdtemp(prefix="mantle-structured-")
            try:
                for name, (rate, count) in run_server(kind, args, workdir).items():
                    if rate:
                        rates[(kind, name)].append(rate)
                    tokens[(kind, name)] = count
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    median = {key: statistics.median(values) if values else None for key, values in rates.items()}
    free = WORKLOADS[0][0]
    print(f"\nDecode tokens/s of {args.streams} stream(s) together, greedy, up to {args.max_tokens} tokens, medians of {args.rounds} round(s); 'vs free' is each server against its own free-text rate\n")
    label = "baseline" if peer == "baseline" else "llama-srv"
    print(f"{'workload':<32} {'tokens':>7} {'mantle':>8} {'vs free':>8} {label:>10} {'vs free':>8} {'mantle/' + label[:5]:>13}")
    for name, _, _ in WORKLOADS:
        m, p = median[("mantle", name)], median[(peer, name)]
        m_free, p_free = median[("mantle", free)], median[(peer, free)]
        cells = [
            f"{m:8.1f}" if m else f"{'-':>8}",
            f"{m / m_free:7.2f}x" if m and m_free else f"{'-':>8}",
            f"{p:10.1f}" if p else f"{'-':>10}",
            f"{p / p_free:7.2f}x" if p and p_free else f"{'-':>8}",
            f"{m / p:12.2f}x" if m and p else f"{'-':>13}",
        ]
        print(f"{name:<32} {tokens.get(('mantle', name), 0):>7} " + " ".join(cells))


if __name__ == "__main__":
    main()
