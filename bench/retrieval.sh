#!/usr/bin/env bash
# Retrieval benchmark on SciFact: Mantle's vector stores against bm25s and hnswlib on the same
# chunks and vectors (see bench/retrieval.py). The peers go into their own virtualenv in the
# cache folder. Usage: bash bench/retrieval.sh [--queries 300]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-retrieval"
DATA="${SCIFACT:-$PWD/../shared/data/scifact}"
bash scripts/build-deps.sh
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check openai numpy tokenizers bm25s PyStemmer hnswlib
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)
cargo build --release --locked
"$VENV/bin/python" bench/retrieval.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --model-dir "$MODELS/all-MiniLM-L6-v2" --data "$DATA" "$@"
