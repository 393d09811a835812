#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): the recipe at HuBERT-base size in fp16 and bf16 on the
# demo corpus, then the dump and prediction benches, one table; non-zero exit on any failure.
# Arguments go to bench/gpu_check.py (e.g. --work-dir DIR --table gpu_check.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
