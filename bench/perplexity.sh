#!/usr/bin/env bash
# Perplexity benchmark: SmolLM2's perplexity over a fixed English text (the first SciFact
# abstracts) through Mantle's likelihood API (`/v1/completions` with echo and logprobs) against
# llama.cpp's own `llama-perplexity` on the same file and context size (see bench/perplexity.py).
# llama-perplexity is built once, as a measuring tool only, from the llama.cpp copy inside the
# llama-cpp-python source package on PyPI, into the cache folder (never committed).
# Usage: bash bench/perplexity.sh [--context 512] [--docs 100]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"

bash scripts/build-deps.sh
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check httpx
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)

TOOL=$(bash bench/llama-tool.sh llama-perplexity | tail -n 1)

cargo build --release --locked
"$VENV/bin/python" bench/perplexity.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --llama-perplexity "$TOOL" \
  --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" --corpus ../shared/data/scifact/corpus.jsonl.gz "$@"
