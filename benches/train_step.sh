#!/usr/bin/env bash
# Training-step throughput per method, side by side with PyTorch, without either loader: the
# CIFAR-10 benchmark's recipe (ResNet-18 CIFAR stem at width 16, heads x0.25, batch 256, SGD)
# on random 32x32 views. For each method and round, `cargo bench --bench train_step` then
# `benches/reference/cifar10_torch.py --step-bench` (same heads and losses as the CIFAR-10
# reference), alternating so both see the same machine; then the median per tool and the ratio.
# Usage: benches/train_step.sh [ROUNDS] [METHODS...]   (default: 3 rounds, all five methods)
# Environment: SELFSUP_BENCH_STEPS (timed steps per round, default 5), SELFSUP_BENCH_WIDTH,
# SELFSUP_BENCH_BATCH, SELFSUP_BENCH_OPTIMIZER (sgd, the default; lars: VICReg's CIFAR LARS in
# both tools; lars-tensor-ops: selfsup's LARS without its fused CPU step), SELFSUP_REF_PYTHON,
# SELFSUP_CIFAR_DIR (the torch script scans it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
shift || true
METHODS=${*:-byol simsiam barlow swav vicreg}
STEPS=${SELFSUP_BENCH_STEPS:-5}
WIDTH=${SELFSUP_BENCH_WIDTH:-16}
BATCH=${SELFSUP_BENCH_BATCH:-256}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
DATA=${SELFSUP_CIFAR_DIR:-target/data/cifar10/train}
OPTIMIZER=${SELFSUP_BENCH_OPTIMIZER:-sgd}
TORCH_OPTIMIZER=sgd
[ "$OPTIMIZER" != sgd ] && TORCH_OPTIMIZER=lars
LOG=$(mktemp)
date -u; nproc; lscpu | grep "Model name" || true
cargo bench --bench train_step --no-run 2>&1 | grep -E "^error" || true
for m in $METHODS; do
    for r in $(seq "$ROUNDS"); do
        line=$(SELFSUP_BENCH_METHOD=$m SELFSUP_BENCH_HEAD_WIDTH=0.25 SELFSUP_BENCH_BATCH=$BATCH \
            SELFSUP_BENCH_WIDTH=$WIDTH SELFSUP_BENCH_STEPS=$STEPS SELFSUP_BENCH_OPTIMIZER=$OPTIMIZER \
            cargo bench --bench train_step 2>/dev/null | grep "median")
        echo "$line"
        echo "$m selfsup $(echo "$line" | sed -E 's/.*median ([0-9.]+).*/\1/')" >>"$LOG"
        line=$("$PY" benches/reference/cifar10_torch.py --method "$m" --width "$WIDTH" --batch "$BATCH" \
            --optimizer "$TORCH_OPTIMIZER" --data "$DATA" --step-bench "$STEPS" 2>/dev/null | grep "median")
        echo "$line"
        echo "$m torch $(echo "$line" | sed -E 's/.*median ([0-9.]+).*/\1/')" >>"$LOG"
    done
done
"$PY" - "$LOG" <<'PYEOF'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    method, tool, value = line.split()
    rates.setdefault(method, {}).setdefault(tool, []).append(float(value))
print("| method | selfsup images/s (median of rounds) | PyTorch images/s | ratio |")
print("|---|---|---|---|")
for method, r in rates.items():
    s, t = statistics.median(r["selfsup"]), statistics.median(r["torch"])
    print(f"| {method} | {s:.1f} | {t:.1f} | **{s / t:.2f}x** |")
PYEOF
rm -f "$LOG"
