#!/usr/bin/env bash
# GPU acceptance in one command on a GPU node: at most 8 minutes, one table, exit non-zero on any failure.
# Run from anywhere: bash bench/gpu_acceptance.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 480 python bench/gpu_acceptance.py "$@"
