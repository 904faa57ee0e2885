#!/usr/bin/env bash
# The benchmark suite at BLIP-2 OPT-2.7B's shapes (EVA ViT-g 1408 x 39 + Q-Former + OPT-2.7B) in
# bfloat16 on one CUDA GPU, blip2core against transformers, in one command (~5-8 minutes on one
# H100/H200-class GPU, of which ~1 minute builds the random 7.6 GB checkpoint the first time):
#
#     bash benchmarks/gpu.sh                    # writes docs/benchmarks-gpu.md
#     bash benchmarks/gpu.sh --rounds 5         # further options go to python -m benchmarks.run
#
# Needs: the repository installed (make install) in .venv, or PYTHON=/path/to/python; a GPU that
# torch sees; ~10 GB free on the disk of the cache folder (BENCH_CACHE, default
# ~/.cache/blip2core-benchmarks) and ~40 GB of host memory. Left out on purpose: preprocessing and the
# mini latency rows (CPU work, measured by the CPU run, docs/benchmarks.md).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
    PYTHON="$(command -v python3 || true)"
fi
if [ -z "$PYTHON" ]; then
    echo "gpu.sh: no Python found: install the repository (make install) or set PYTHON" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: torch ($PYTHON) sees no CUDA device; this script is for a GPU machine (CPU: python -m benchmarks.run)" >&2
    exit 1
fi
"$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB')"

cache_args=()
if [ -n "${BENCH_CACHE:-}" ]; then
    cache_args=(--cache-dir "$BENCH_CACHE")
fi

exec "$PYTHON" -m benchmarks.run \
    --scale g --device cuda --dtype bfloat16 --rounds 3 \
    --only encode,caption,vqa,default-dtype,quantized,retrieval,memory,training \
    --doc docs/benchmarks-gpu.md "${cache_args[@]}" "$@"
