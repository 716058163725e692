#!/usr/bin/env bash
# Build llama-cpp-python's wheel once per machine: PyPI ships it as source only, and the build
# compiles llama.cpp (about 8 min on 2 idle cores, 25 on busy ones). The wheel is kept in
# WHEEL_DIR, outside the checkout, so every later install (and CI on this machine) links it.
# usage: llama_cpp_wheel.sh WHEEL_DIR REQUIREMENT PYTHON     (REQUIREMENT: llama-cpp-python==X.Y.Z)
#
# Compiled for this machine's CPU (-march=native) without the AMX tile instructions: on a Xeon
# that has AMX, llama.cpp 0.3.36's AMX matmul runs `tilezero` on an OpenMP thread that never
# loaded a tile configuration and the worker dies of SIGILL on its first decode (measured on
# 2026-12-01; a Q4_1 model takes that path). AMX only pays at large batches, which a CPU worker
# does not run. BUILD_RECIPE names these flags: a wheel built by another recipe is rebuilt.
set -euo pipefail
wheel_dir=$1 requirement=$2 python=$3
version=${requirement#*==}
BUILD_RECIPE="native-noamx-1"
stamp="$wheel_dir/llama_cpp_python-$version.$BUILD_RECIPE.built"
if compgen -G "$wheel_dir/llama_cpp_python-$version-*.whl" >/dev/null 2>&1; then
    [[ -f $stamp ]] && exit 0
    echo "==> the cached $requirement wheel was built by an older recipe (it may use AMX): rebuilding"
    rm -f "$wheel_dir"/llama_cpp_python-"$version"-*.whl
fi
command -v cmake >/dev/null && command -v c++ >/dev/null || {
    echo "error: building $requirement needs cmake and a C++ compiler (apt-get install cmake g++)" >&2
    exit 1
}
mkdir -p "$wheel_dir"
echo "==> building $requirement once for this machine (compiles llama.cpp: ~8-25 min; kept in $wheel_dir)"
started=$(date +%s)
no_amx=""
[[ $(uname -m) == x86_64 ]] && no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # beat -march=native
CFLAGS="${CFLAGS:-} $no_amx" CXXFLAGS="${CXXFLAGS:-} $no_amx" \
CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$python" -m pip wheel --no-deps --no-cache-dir \
    --progress-bar off "$requirement" -w "$wheel_dir"
touch "$stamp"
echo "==> $requirement built in $(( $(date +%s) - started )) s"
