#!/usr/bin/env bash
# Builds one llama.cpp tool (llama-server, llama-perplexity...) once, as a measuring tool only,
# from the llama.cpp copy inside the llama-cpp-python source package on PyPI, into the cache
# folder (never committed), and prints its path.
# Usage: bash bench/llama-tool.sh TARGET
set -euo pipefail
TARGET="$1"
CACHE="${MANTLE_CACHE:-$HOME/.cache/mantle}"
VENV="$CACHE/venv-test"
PEER="$CACHE/peer"
LLAMA_CPP_PYTHON="${LLAMA_CPP_PYTHON:-0.3.36}"
SRC="$PEER/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
TOOL="$SRC/build/bin/$TARGET"
if [ ! -x "$TOOL" ]; then
  mkdir -p "$PEER"
  [ -d "$SRC" ] || (cd "$PEER" && "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d . "llama-cpp-python==$LLAMA_CPP_PYTHON" && tar xzf "llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz")
  (cd "$SRC" \
    && cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
         -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null \
    && cmake --build build --target "$TARGET" -j"$(nproc)" >/dev/null) >&2
fi
echo "$TOOL"
