#!/usr/bin/env bash
# The prepared GPU check (benchmarks/README.md, "Fused mixed operations"): run as is by a session lent
# a GPU, from the repository root, in under 8 minutes on one H100/H200. The device machine has torch
# preinstalled and no network, hence --no-deps. Figures go to $OUT (or ./gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
pip install --no-deps --no-build-isolation -q -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
# numerics first: fused equals per-op on the device (exit 1 otherwise)
python benchmarks/fused_numerics.py --device cuda | tee "$out/fused_numerics-cuda.txt"
# paper search config: s/step, peak memory and CUDA kernels per step (--profile), per-op and fused
python benchmarks/search_step.py --device cuda --engines ours_per_op,ours --fused \
    --modes weight,darts_1st,darts_2nd --steps 5 --warmup 2 --profile --timeout 300 \
    --json "$out/search_step-cuda-fused.json" | tee "$out/search_step-cuda-fused.txt"
# and the default (fused_edges: null): on a GPU the conv ops per edge, the poolings once per state
python benchmarks/search_step.py --device cuda --engines ours --modes weight,darts_2nd --steps 5 --warmup 2 \
    --profile --timeout 300 --json "$out/search_step-cuda-default.json" | tee "$out/search_step-cuda-default.txt"
# the textbook reference, for the ratios of the README's table
python benchmarks/search_step.py --device cuda --engines reference --modes weight,darts_2nd --steps 5 --warmup 2 \
    --timeout 300 --json "$out/search_step-cuda-reference.json" | tee "$out/search_step-cuda-reference.txt"
