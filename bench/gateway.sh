#!/usr/bin/env bash
# Gateway overhead benchmark (see bench/gateway.py): quotas and usage accounting on and off.
# Usage: bash bench/gateway.sh [--rounds 3] [--requests 400] [--concurrency 4]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check httpx
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)
cargo build --release --locked
"$VENV/bin/python" bench/gateway.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
