#!/usr/bin/env bash
# Serving benchmark: Mantle against llama.cpp's `llama-server` (see bench/serve.py for what it
# measures). llama-server is built once, as a measuring tool only, from the llama.cpp copy inside
# the llama-cpp-python source package on PyPI, into the cache folder (never committed).
# Usage: bash bench/serve.sh [--rounds 3] [--concurrency 1,4,16]
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"
PEER="$CACHE/peer"
LLAMA_CPP_PYTHON="${LLAMA_CPP_PYTHON:-0.3.36}"

bash scripts/build-deps.sh
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check httpx
MODELS=$(PATH="$VENV/bin:$PATH" bash scripts/fetch-models.sh | tail -n 1)

SERVER="$PEER/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp/build/bin/llama-server"
if [ ! -x "$SERVER" ]; then
  mkdir -p "$PEER"
  (cd "$PEER" && "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d . "llama-cpp-python==$LLAMA_CPP_PYTHON" && tar xzf "llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz")
  (cd "$PEER/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp" \
    && cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
         -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null \
    && cmake --build build --target llama-server -j"$(nproc)" >/dev/null)
fi

cargo build --release --locked
"$VENV/bin/python" bench/serve.py --mantle "${CARGO_TARGET_DIR:-$PWD/target}/release/mantle" --llama-server "$SERVER" \
  --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
