#!/usr/bin/env bash
# Installs what building Mantle needs beyond cargo: cmake, clang and libclang-dev, with which the
# llama-cpp-sys-2 crate builds llama.cpp from source. Uses apt when run as root; otherwise says
# what to install.
set -euo pipefail
if command -v cmake >/dev/null 2>&1 && command -v clang >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake clang libclang-dev >/dev/null
else
  echo "install cmake, clang and libclang-dev (needed to build llama.cpp), e.g. sudo apt-get install cmake clang libclang-dev" >&2
  exit 1
fi
