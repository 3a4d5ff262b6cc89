#!/usr/bin/env bash
# The communication of data-parallel training on this machine: each shape as one process with
# the whole global batch, then as 2 ranks under mpirun with half each (one CPU thread per rank,
# so the ranks do not fight over the cores; the single process gets both threads).
# Results: BENCHMARKS.md, "Data-parallel training over MPI".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/selfsup-target}"
bin=$(cargo bench --features mpi --bench distributed_step --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*distributed_step[^"]*"' | tail -1 | cut -d'"' -f4)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
lscpu | grep 'Model name' || true
run() {
    "$bin"
    RAYON_NUM_THREADS=1 mpirun -np 2 --oversubscribe --bind-to none -x RAYON_NUM_THREADS \
        -x SELFSUP_BENCH_BACKBONE -x SELFSUP_BENCH_WIDTH -x SELFSUP_BENCH_BATCH \
        -x SELFSUP_BENCH_METHOD -x SELFSUP_BENCH_STEPS -x SELFSUP_BENCH_SYNC_BN "$bin"
}
export SELFSUP_BENCH_STEPS=${SELFSUP_BENCH_STEPS:-5}
for method in byol simclr; do
    SELFSUP_BENCH_BACKBONE=resnet18 SELFSUP_BENCH_WIDTH=16 SELFSUP_BENCH_BATCH=256 \
        SELFSUP_BENCH_METHOD=$method SELFSUP_BENCH_SYNC_BN=0 run
done
SELFSUP_BENCH_BACKBONE=resnet50 SELFSUP_BENCH_WIDTH=64 SELFSUP_BENCH_BATCH=32 \
    SELFSUP_BENCH_METHOD=byol SELFSUP_BENCH_SYNC_BN=0 run
