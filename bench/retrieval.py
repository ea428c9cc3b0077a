"""Retrieval benchmark on SciFact (BEIR test split): Mantle's vector stores, filled and searched
through the public API with the official `openai` client, against `bm25s` and `hnswlib` run on the
same chunks (read back from Mantle) and the same vectors (all-MiniLM-L6-v2 through Mantle's
/v1/embeddings), and against the published figures.

Each abstract is one file (`title` and `text`); a document's score is its best chunk's. Reported:
nDCG@10 and recall@100 for text alone, vectors alone and hybrid (RRF), ANN recall@10 of hnswlib
against exact search on the same vectors, ingestion throughput (documents, chunks and tokens per
second; tokens counted by the model's own tokenizer.json, special tokens included, as embedded),
and search latency p50/p99 at 1 and 8 concurrent clients.

Usage: python bench/retrieval.py --mantle BIN --model-dir DIR --data DIR [--queries 300]
Needs openai, numpy, tokenizers, bm25s (with PyStemmer) and hnswlib in the running interpreter.
"""

import argparse
import concurrent.futures
import gzip
import json
import math
import os
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
import openai


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mantle(binary, model_dir, workdir):
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
    subprocess.run([binary, "deploy", "mini", "admin/minilm@main", "--max-batch", "64"], check=True, env=cli, capture_output=True)
    return proc, url, token


def load(data):
    corpus = {}
    with gzip.open(Path(data) / "corpus.jsonl.gz", "rt") as f:
        for line in f:
            doc = json.loads(line)
            corpus[doc["_id"]] = (doc.get("title", "") + "\n" + doc["text"]).strip()
    queries = {}
    for line in open(Path(data) / "queries.jsonl"):
        q = json.loads(line)
        queries[q["_id"]] = q["text"]
    qrels = {}
    for i, line in enumerate(open(Path(data) / "qrels" / "test.tsv")):
        if i == 0:
            continue
        qid, did, score = line.rstrip("\n").split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, set()).add(did)
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def ndcg10(ranked, relevant):
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal


def recall(ranked, relevant, k):
    return len(set(ranked[:k]) & relevant) / len(relevant)


def docs_of(hits):
    """Document ids by their best chunk, from (doc id, score) pairs best first."""
    seen, out = set(), []
    for doc, _ in hits:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def evaluate(name, runs, qrels):
    n = [ndcg10(runs[q], qrels[q]) for q in runs]
    r = [recall(runs[q], qrels[q], 100) for q in runs]
    return name, statistics.mean(n), statistics.mean(r)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    import bm25s
    import hnswlib
    import Stemmer

    corpus, queries, qrels = load(args.data)
    queries = dict(list(queries.items())[: args.queries])
    workdir = tempfile.mkdtemp(prefix="mantle-retrieval-bench-")
    proc, url, token = start_mantle(args.mantle, args.model_dir, workdir)
    try:
        api = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=600)
        api.embeddings.create(model="mini", input="warm up")
        store = api.vector_stores.create(name="scifact", extra_body={"embedding_model": "mini"})
        # Upload every abstract, then attach them in batches of 500; time from the first upload
        # to the last file ingested.
        started = time.perf_counter()
        ids = {}

        def upload(item):
            doc_id, text = item
            return doc_id, api.files.create(file=(f"{doc_id}.txt", text.encode()), purpose="assistants").id

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for doc_id, file_id in pool.map(upload, corpus.items()):
                ids[file_id] = doc_id
        uploaded = time.perf_counter()
        file_ids = list(ids)
        batches = [api.vector_stores.file_batches.create(store.id, file_ids=file_ids[i : i + 500]) for i in range(0, len(file_ids), 500)]
        for batch in batches:
            while api.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).status == "in_progress":
                time.sleep(1)
        ingested = time.perf_counter()
        status = api.vector_stores.retrieve(store.id)
        assert status.file_counts.completed == len(corpus), status.file_counts
        # The chunks as Mantle made them, for the peers.
        chunks = []

        def chunks_of(file_id):
            return [(ids[file_id], part.text) for part in api.vector_stores.files.content(file_id, vector_store_id=store.id)]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for part in pool.map(chunks_of, file_ids):
                chunks.extend(part)

        def search(query, weights):
            body = {"ranking_options": {"hybrid_search": {"embedding_weight": weights[0], "text_weight": weights[1]}}}
            page = api.vector_stores.search(store.id, query=query, max_num_results=100, extra_body=body)
            return docs_of([(ids[d.file_id], d.score) for d in page.data])

        rows = []
        for name, weights in [("Mantle text (BM25)", (0, 1)), ("Mantle vectors", (1, 0)), ("Mantle hybrid (RRF)", (1, 1))]:
            rows.append(evaluate(name, {q: search(t, weights) for q, t in queries.items()}, qrels))

        # Peers on the same chunks: bm25s (stopwords, Snowball stemmer) and hnswlib over the
        # same model's vectors of the same chunks.
        texts = [t for _, t in chunks]
        import tokenizers

        counter = tokenizers.Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
        counter.no_padding()
        counter.enable_truncation(256)
        tokens = sum(len(e.ids) for e in counter.encode_batch(texts))
        stemmer = Stemmer.Stemmer("english")
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
        qids = list(queries)
        results, scores = retriever.retrieve(bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False), k=100, show_progress=False)
        bm25_runs = {q: docs_of([(chunks[i][0], s) for i, s in zip(results[n], scores[n])]) for n, q in enumerate(qids)}
        rows.append(evaluate("bm25s (peer)", bm25_runs, qrels))
        vectors = []
        for i in range(0, len(texts), 128):
            vectors.extend(d.embedding for d in api.embeddings.create(model="mini", input=texts[i : i + 128]).data)
        vectors = np.array(vectors, dtype=np.float32)
        qvec = np.array([d.embedding for d in api.embeddings.create(model="mini", input=[queries[q] for q in qids]).data], dtype=np.float32)
        index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
        index.init_index(max_elements=len(vectors), ef_construction=200, M=16)
        index.add_items(vectors)
        index.set_ef(100)
        labels, distances = index.knn_query(qvec, k=100)
        rows.append(evaluate("hnswlib (peer)", {q: docs_of([(chunks[i][0], -d) for i, d in zip(labels[n], distances[n])]) for n, q in enumerate(qids)}, qrels))
        exact = np.argsort(-(qvec @ vectors.T), axis=1)[:, :10]
        ann_recall = statistics.mean(len(set(labels[n][:10]) & set(exact[n])) / 10 for n in range(len(qids)))

        # Latency at 1 and 8 concurrent clients: hybrid, text alone, and the query's embedding
        # alone (/v1/embeddings, the floor the vector part stands on).
        latency = []
        calls = {
            "hybrid search": lambda query: api.vector_stores.search(store.id, query=query, max_num_results=10),
            "text-only search": lambda query: api.vector_stores.search(store.id, query=query, max_num_results=10, extra_body={"ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}}),
            "query embedding": lambda query: api.embeddings.create(model="mini", input=query),
        }
        for label, call in calls.items():
            for clients in (1, 8):

                def timed(query):
                    t = time.perf_counter()
                    call(query)
                    return time.perf_counter() - t

                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    times = sorted(pool.map(timed, [queries[q] for q in qids]))
                latency.append((label, clients, times[len(times) // 2] * 1000, times[int(len(times) * 0.99) - 1] * 1000))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nSciFact (BEIR test): {len(corpus)} abstracts -> {len(chunks)} chunks, {len(queries)} queries; all-MiniLM-L6-v2\n")
    print(f"{'system':<22} {'nDCG@10':>8} {'recall@100':>10}")
    for name, n, r in rows:
        print(f"{name:<22} {n:>8.3f} {r:>10.3f}")
    print("published nDCG@10: BM25 0.665-0.679, all-MiniLM-L6-v2 0.645, RRF of the two about 0.715")
    print(f"\nANN recall@10 of hnswlib against exact search on the same vectors: {ann_recall:.3f} (Mantle searches exactly: 1.000)")
    print(f"ingestion: {len(corpus) / (ingested - started):.1f} documents/s end to end ({uploaded - started:.1f} s uploading, {ingested - uploaded:.1f} s chunking and embedding {len(chunks)} chunks of {tokens} tokens: {len(chunks) / (ingested - uploaded):.1f} chunks/s, {tokens / (ingested - uploaded):.0f} tokens/s)")
    print(f"\n{'call':<18} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for label, clients, p50, p99 in latency:
        print(f"{label:<18} {clients:>7} {p50:>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
