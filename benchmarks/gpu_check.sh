#!/usr/bin/env bash
# The GPU check of vireid-layers: CUDA tests, the training-step, layer, method and evaluation benchmarks, and a
# short real-size DEEN training, all written under one output folder (at most 8 files). See benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh OUT            # on a CUDA machine with PyTorch, timm and einops (about 8 minutes)
#   bash benchmarks/gpu_check.sh OUT --quick    # tiny sizes on the CPU, the same code path
#
# Nothing is installed: the device machine has no network. PYTHON picks the interpreter (default: python3).
set -uo pipefail
if [ "$#" -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT [--quick] [gpu_check.py options]" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT" || exit 2
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
