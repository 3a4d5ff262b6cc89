#!/usr/bin/env bash
# One short GPU benchmark for a lent machine (no Rust toolchain, no network there): BYOL on
# ResNet-18 (CIFAR stem), batch 256, images/s for each GPU variant of selfsup that was carried,
# and the same step in PyTorch CUDA, all in one run (about 3-5 minutes):
#   wgpu   - `--features wgpu`: wgpu with burn's fusion and autotune, WGSL kernels;
#   vulkan - `--features vulkan`: wgpu on Vulkan with cubecl's SPIR-V compiler (cooperative
#            matrices / tensor cores on NVIDIA), fusion and autotune;
#   cuda   - `--features cuda` (fusion and autotune), where such a binary could be built.
# The first steps of each include autotune's measurements and fusion's search (one untimed
# warm-up step, then the median of STEPS).
#
# Build here, strip, and carry the binaries:
#   cargo bench --bench train_step --features wgpu --no-run     # -> target/gpu/train_step_wgpu
#   cargo bench --bench train_step --features vulkan --no-run   # -> target/gpu/train_step_vulkan
#   (and, if `--features cuda` builds, target/gpu/train_step_cuda); strip target/gpu/*
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
for backend in wgpu vulkan cuda; do
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
