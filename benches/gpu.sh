#!/usr/bin/env bash
# One short GPU benchmark for a lent machine (no Rust toolchain, no network there): BYOL on
# ResNet-18 (CIFAR stem), batch 256, images/s on wgpu, on cuda when that binary was built, and
# the same step in PyTorch CUDA, all in one run (about 2-4 minutes).
#
# Build here, strip, and carry the binaries:
#   cargo bench --bench train_step --features wgpu --no-run   # then copy the bench binary to
#   target/gpu/train_step_wgpu (and, if `--features cuda` builds, target/gpu/train_step_cuda);
#   strip target/gpu/*
# Carry the bench-profile (release) binary: a dev-profile build with wgpu is 66 MB stripped,
# over the 64 MiB a device run may carry.
# On the GPU machine:  benches/gpu.sh [WIDTH] [BATCH] [STEPS]
# On a CPU machine, for a small dry run:  SELFSUP_GPU_DRY=1 benches/gpu.sh 8 16 2
set -uo pipefail
cd "$(dirname "$0")/.."
WIDTH=${1:-64}
BATCH=${2:-256}
STEPS=${3:-10}
BIN=${SELFSUP_GPU_BIN:-target/gpu}
PY=${SELFSUP_PYTHON:-python3}
date -u
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
for backend in wgpu cuda; do
    exe="$BIN/train_step_$backend"
    if [ -x "$exe" ]; then
        device=$backend
        [ -n "${SELFSUP_GPU_DRY:-}" ] && device=cpu
        SELFSUP_BENCH_DEVICE=$device SELFSUP_BENCH_WIDTH=$WIDTH SELFSUP_BENCH_BATCH=$BATCH \
            SELFSUP_BENCH_STEPS=$STEPS timeout 240 "$exe" --bench 2>&1 | grep -E "images/s|error" \
            || echo "selfsup $backend: failed or timed out"
    else
        echo "selfsup $backend: no binary at $exe"
    fi
done
dev=cuda
[ -n "${SELFSUP_GPU_DRY:-}" ] && dev=cpu
timeout 240 "$PY" benches/reference/train_step_torch.py --device $dev --width "$WIDTH" \
    --batch "$BATCH" --steps "$STEPS" 2>&1 | grep -E "images/s|Error" || echo "PyTorch: failed"
