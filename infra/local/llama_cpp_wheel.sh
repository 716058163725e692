#!/usr/bin/env bash
# Build llama-cpp-python's wheel once per machine: PyPI ships it as source only, and the build
# compiles llama.cpp (about 8 min on 2 idle cores, 25 on busy ones). The wheel is kept in
# WHEEL_DIR, outside the checkout, so every later install (and CI on this machine) links it.
# usage: llama_cpp_wheel.sh WHEEL_DIR REQUIREMENT PYTHON     (REQUIREMENT: llama-cpp-python==X.Y.Z)
set -euo pipefail
wheel_dir=$1 requirement=$2 python=$3
version=${requirement#*==}
compgen -G "$wheel_dir/llama_cpp_python-$version-*.whl" >/dev/null 2>&1 && exit 0
command -v cmake >/dev/null && command -v c++ >/dev/null || {
    echo "error: building $requirement needs cmake and a C++ compiler (apt-get install cmake g++)" >&2
    exit 1
}
mkdir -p "$wheel_dir"
echo "==> building $requirement once for this machine (compiles llama.cpp: ~8-25 min; kept in $wheel_dir)"
started=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$python" -m pip wheel --no-deps --no-cache-dir \
    --progress-bar off "$requirement" -w "$wheel_dir"
echo "==> $requirement built in $(( $(date +%s) - started )) s"
