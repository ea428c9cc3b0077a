#!/usr/bin/env bash
# Serving benchmark: Mantle against llama.cpp's `llama-server` (see bench/serve.py for what it
# measures). llama-server is built once, as a measuring tool only, from the llama.cpp copy inside
# the llama-cpp-python source package on PyPI, into the cache folder (never committed).
# Usage: bash bench/serve.sh [--rounds 3] [--concurrency 1,4,16]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"

bash scripts/build-deps.sh
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check httpx
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)

SERVER=$(bash bench/llama-tool.sh llama-server | tail -n 1)

cargo build --release --locked
"$VENV/bin/python" bench/serve.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --llama-server "$SERVER" \
  --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
