#!/usr/bin/env bash
# Fail early, with a reason, when the Python install cannot fit: torch's CUDA wheels from PyPI need
# about 9 GB in uv's cache the first time, and running out half-way leaves a broken install.
# usage: disk_check.sh CACHE_DIR MIN_FREE_GB   (skipped once the cache holds torch; MIN_FREE_GB=0 skips)
set -euo pipefail
cache=$1 need_gb=$2
[ "$need_gb" -gt 0 ] || exit 0
compgen -G "$cache/archive-v*/*/torch" >/dev/null 2>&1 && exit 0
dir=$cache
while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
free_gb=$((free_kb / 1024 / 1024))
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "error: only ${free_gb} GB free on the disk of $cache; the first install needs about ${need_gb} GB" >&2
    echo "       (torch's CUDA wheels from PyPI). Free space there, or set UV_CACHE_DIR to a larger disk" >&2
    echo "       (on the same filesystem as this checkout, so .venv stays hard-linked), or MIN_FREE_GB=0 to try anyway." >&2
    exit 1
fi
