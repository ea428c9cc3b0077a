#!/usr/bin/env bash
# Builds the release binary and runs the transfer benchmark (Xet and LFS paths, the dedup case)
# with the latest huggingface_hub and hf_xet.
# Usage: bash bench/run.sh [--size-mib 1024] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MANTLE_CACHE:-$HOME/.cache/mantle}/venv-test"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade huggingface_hub hf_xet numpy
cargo build --release --locked
MANTLE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" "$VENV/bin/python" bench/transfer.py "$@"
