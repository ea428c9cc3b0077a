#!/usr/bin/env bash
# Structured output benchmark (see bench/structured.py): decode speed of grammar-constrained
# answers against free text, on Mantle and on llama-server (built by bench/llama-tool.sh).
# Usage: bash bench/structured.sh [--rounds 3] [--max-tokens 160] [--streams 1]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"
bash scripts/build-deps.sh
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
SERVER=$(bash bench/llama-tool.sh llama-server | tail -n 1)
"$VENV/bin/pip" install -q --disable-pip-version-check httpx
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)
cargo build --release --locked
"$VENV/bin/python" bench/structured.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --llama-server "$SERVER" \
  --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
