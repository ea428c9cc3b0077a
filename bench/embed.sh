#!/usr/bin/env bash
# Embedding benchmark: Mantle against sentence-transformers on CPU torch (see bench/embed.py).
# sentence-transformers and torch go into their own virtualenv in the cache folder (torch from
# PyPI is several GB); it is made once.
# Usage: bash bench/embed.sh [--rounds 3] [--threads 1,2]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-st"
bash scripts/build-deps.sh
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check sentence-transformers requests
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)
cargo build --release --locked
# OPENBLAS_* pins slow torch's CPU kernels on some machines; the peer runs at its best.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" bench/embed.py \
  --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --model-dir "$MODELS/all-MiniLM-L6-v2" "$@"
