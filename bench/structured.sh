#!/usr/bin/env bash
# Structured output benchmark (see bench/structured.py): decode speed of grammar-constrained
# answers against free text, on Mantle and on llama-server (built by bench/serve.sh's recipe).
# Usage: bash bench/structured.sh [--rounds 3] [--max-tokens 160] [--streams 1]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"
LLAMA_CPP_PYTHON="${LLAMA_CPP_PYTHON:-0.3.36}"
SERVER="$CACHE/peer/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp/build/bin/llama-server"
if [ ! -x "$SERVER" ]; then
  echo "llama-server is not built yet: run bash bench/serve.sh once (it builds it into $CACHE/peer)" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check httpx
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)
cargo build --release --locked
"$VENV/bin/python" bench/structured.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --llama-server "$SERVER" \
  --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
