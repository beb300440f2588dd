#!/usr/bin/env bash
# GPU check: backbone throughput against torchvision, AMP training steps of every detector config at
# its paper scale (BCCD images standing in), test-time inference, torchrun on all GPUs; one line per
# check with img/s, peak memory and PASS/FAIL. Random weights, no downloads, under 8 minutes.
# On a machine without CUDA it says so and exits 0 with nothing run.
#
#   tools/gpu_check.sh                  # from the repository root or anywhere
#   tools/gpu_check.sh --configs bccd_vgg16_fast --steps 8
#   PYTHON=.venv/bin/python tools/gpu_check.sh
#   tools/gpu_check.sh --dry-run        # the same code on the CPU, tiny sizes, 1 step
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no GPU on this machine (torch.cuda.is_available() is False): nothing was run."
    echo "Run it on a CUDA machine, or 'tools/gpu_check.sh --dry-run' to exercise the code on the CPU."
    exit 0
fi
# 8 minutes at most: the script skips the checks left once its budget (450 s) is spent; this is the backstop
exec timeout --signal=INT --kill-after=20 480 "$PY" tools/gpu_check.py "$@"
