"""Gateway overhead: requests/s of a tiny cached request (a short chat prompt served before, so
all but its last token come from the KV cache; one output token) through Mantle with usage
accounting off and no quotas, against the same with usage accounting on and quotas on the token
and on the caller's org (both limits far above the load, so nothing is refused). Same binary,
same model, same data, one server at a time, rounds alternated; prints a table of medians.

Usage: python bench/gateway.py --mantle BIN --gguf FILE [--rounds 3] [--requests 400] [--concurrency 4]
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve import start_mantle  # noqa: E402

BODY = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}


async def load(url, token, model, requests, concurrency):
    body = dict(BODY, model=model)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(url + "/v1/chat/completions", json=body, headers=headers)  # load and cache
        left = requests

        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def cli(binary, url, token, *args):
    subprocess.run([binary, *args], check=True, capture_output=True, env=dict(os.environ, MANTLE_URL=url, MANTLE_TOKEN=token))


CONFIGS = [("no usage accounting, no quotas", False, False), ("usage accounting only", True, False), ("quotas only (token and org)", False, True), ("usage accounting + token and org quotas", True, True)]


def run(args, accounting, quotas):
    workdir = tempfile.mkdtemp(prefix="mantle-gateway-")
    os.environ["MANTLE__RUNTIME__USAGE_ACCOUNTING"] = "true" if accounting else "false"
    proc, url, token, model = start_mantle(args.mantle, args.gguf, args.threads, 4, 512, workdir)
    try:
        if quotas:
            cli(args.mantle, url, token, "orgs", "create", "benchorg")
            cli(args.mantle, url, token, "orgs", "add-member", "benchorg", "admin")
            tokens = subprocess.run([args.mantle, "tokens", "list"], check=True, capture_output=True, text=True, env=dict(os.environ, MANTLE_URL=url, MANTLE_TOKEN=token)).stdout
            token_id = next(line.split()[0] for line in tokens.splitlines() if line.split() and line.split()[0].isdigit())
            cli(args.mantle, url, token, "quotas", "set", "--token-id", token_id, "--rpm", "1000000", "--tpm", "1000000000", "--monthly-tokens", "1000000000000")
            cli(args.mantle, url, token, "quotas", "set", "--org", "benchorg", "--rpm", "1000000", "--tpm", "1000000000")
        return asyncio.run(load(url, token, model, args.requests, args.concurrency))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", required=True)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    results = {config: [] for config in CONFIGS}
    for round_ in range(args.rounds):
        for config in (CONFIGS if round_ % 2 == 0 else CONFIGS[::-1]):
            results[config].append(run(args, config[1], config[2]))
    medians = {config: statistics.median(values) for config, values in results.items()}
    plain = medians[CONFIGS[0]]
    print(f"\nTiny cached chat request (1 output token), {args.concurrency} concurrent, {args.requests} requests, medians of {args.rounds} round(s)\n")
    print(f"{'configuration':<42} {'requests/s':>11} {'vs none':>8}   per round")
    for config in CONFIGS:
        print(f"{config[0]:<42} {medians[config]:>11.1f} {medians[config] / plain:>7.3f}x   {' '.join(f'{r:.1f}' for r in results[config])}")
    print(f"\ncost of quotas and usage accounting together: {(1 - medians[CONFIGS[3]] / plain) * 100:.1f}% of throughput")


if __name__ == "__main__":
    main()
