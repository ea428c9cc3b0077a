#!/usr/bin/env bash
# Builds Mantle and runs the scanner benchmark against picklescan and modelscan (from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MANTLE_CACHE:-$HOME/.cache/mantle}/venv-test"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade picklescan modelscan numpy
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --locked
MANTLE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" "$VENV/bin/python" bench/scan.py "$@"
