"""Embedding benchmark: Mantle's /v1/embeddings (its own BERT encoder) against sentence-transformers
on CPU torch, same model files (all-MiniLM-L6-v2), same sentences, same thread counts.

256 sentences of about 27 words, sent in requests of 32 (Mantle) or encoded with batch_size=32
(sentence-transformers); sentences/s are medians over rounds, contenders alternating. The table
also gives the lowest cosine similarity between the two implementations' vectors.

Usage: python bench/embed.py --mantle BIN --model-dir DIR [--rounds 3] [--threads 1,2]
Needs sentence-transformers (and so torch) in the running interpreter.
"""

import argparse
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

import numpy as np
import requests

WORDS = (
    "the a of to and in is was for on that with as by at from it this be are an or have has had not but "
    "river city market engine people system water energy policy music garden science history report "
    "quickly slowly carefully early later today yesterday quietly loudly across under between beyond "
    "build measure discover explain improve travel write read design choose follow change protect"
).split()


def sentences(n, seed=7):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(22, 32))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mantle(binary, model_dir, threads, workdir):
    port = free_port()
    token = "bench-" + uuid.uuid4().hex
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MANTLE_ADMIN_TOKEN=token, RUST_LOG="warn")
    proc = subprocess.Popen([binary, "serve", "--data", str(Path(workdir) / "data"), "--addr", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    src = Path(workdir) / "minilm"
    shutil.copytree(model_dir, src)
    (src / "README.md").write_text("---\nlicense: apache-2.0\n---\n# all-MiniLM-L6-v2\n")
    cli = dict(os.environ, MANTLE_URL=url, MANTLE_TOKEN=token)
    subprocess.run([binary, "push", str(src), "admin/minilm"], check=True, env=cli, capture_output=True)
    subprocess.run([binary, "deploy", "mini", "admin/minilm@main", "--threads", str(threads), "--max-batch", "32"], check=True, env=cli, capture_output=True)
    return proc, url, token


def run_mantle(url, token, texts, batch):
    session = requests.Session()
    vectors = []
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        reply = session.post(url + "/v1/embeddings", json={"model": "mini", "input": texts[i : i + batch], "encoding_format": "float"}, headers={"Authorization": f"Bearer {token}"})
        reply.raise_for_status()
        vectors.extend(d["embedding"] for d in reply.json()["data"])
    return len(texts) / (time.perf_counter() - started), np.array(vectors)


def run_st(model, texts, batch):
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - started), np.array(vectors)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    texts = sentences(args.sentences)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        st = SentenceTransformer(args.model_dir, device="cpu")
        workdir = tempfile.mkdtemp(prefix="mantle-embed-bench-")
        proc, url, token = start_mantle(args.mantle, args.model_dir, threads, workdir)
        try:
            run_mantle(url, token, texts[:32], args.batch)  # load the deployment
            run_st(st, texts[:32], args.batch)
            ours, theirs = [], []
            for round_ in range(args.rounds):
                order = [("mantle", lambda: run_mantle(url, token, texts, args.batch)), ("st", lambda: run_st(st, texts, args.batch))]
                for name, fn in order if round_ % 2 == 0 else order[::-1]:
                    rate, vectors = fn()
                    (ours if name == "mantle" else theirs).append((rate, vectors))
            cosine = min(float(a @ b) for a, b in zip(ours[0][1], theirs[0][1]))
            rows.append((threads, statistics.median(r for r, _ in ours), statistics.median(r for r, _ in theirs), cosine))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nall-MiniLM-L6-v2, {args.sentences} sentences of ~27 words, batches of {args.batch}, medians of {args.rounds} rounds\n")
    print(f"{'threads':>7} {'mantle sent/s':>14} {'sentence-transformers':>22} {'ratio':>7} {'min cosine':>11}")
    for threads, ours, theirs, cosine in rows:
        print(f"{threads:>7} {ours:>14.1f} {theirs:>22.1f} {ours / theirs:>6.2f}x {cosine:>11.6f}")


if __name__ == "__main__":
    main()
