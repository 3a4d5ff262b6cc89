#!/usr/bin/env bash
# Training-step throughput per method, side by side with PyTorch, without either loader: the
# CIFAR-10 benchmark's recipe (ResNet-18 CIFAR stem at width 16, heads x0.25, batch 256, SGD)
# on random 32x32 views. For each method and round, `cargo bench --bench train_step` then
# `benches/reference/cifar10_torch.py --step-bench` (same heads and losses as the CIFAR-10
# reference), alternating so both see the same machine; then the median per tool and the ratio.
# Usage: benches/train_step.sh [ROUNDS] [METHODS...]
#        (default: 3 rounds, byol simsiam barlow swav vicreg moco dino deepcluster; simclr too)
# Environment: SELFSUP_BENCH_STEPS (timed steps per round, default 5), SELFSUP_BENCH_WIDTH,
# SELFSUP_BENCH_BATCH, SELFSUP_BENCH_HEAD_WIDTH (the heads' scale in both tools, default 0.25; 1
# for the papers' heads), SELFSUP_BENCH_OPTIMIZER (sgd, the default: momentum 0.9, wd 5e-4; lars:
# VICReg's CIFAR LARS, wd 1e-4, in both tools; lars-tensor-ops: selfsup's LARS without its fused
# CPU step), the same for every method (the bench does not use the methods' presets); 1-D
# parameters without weight decay in both tools. SELFSUP_REF_PYTHON, SELFSUP_CIFAR_DIR (the
# torch script scans it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
shift || true
METHODS=${*:-byol simsiam barlow swav vicreg moco dino deepcluster}
STEPS=${SELFSUP_BENCH_STEPS:-5}
WIDTH=${SELFSUP_BENCH_WIDTH:-16}
BATCH=${SELFSUP_BENCH_BATCH:-256}
HEAD_WIDTH=${SELFSUP_BENCH_HEAD_WIDTH:-0.25}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
DATA=${SELFSUP_CIFAR_DIR:-target/data/cifar10/train}
OPTIMIZER=${SELFSUP_BENCH_OPTIMIZER:-sgd}
TORCH_OPTIMIZER="--optimizer sgd --weight-decay 5e-4"
[ "$OPTIMIZER" != sgd ] && TORCH_OPTIMIZER="--optimizer lars --weight-decay 1e-4"
LOG=$(mktemp)
date -u; nproc; lscpu | grep "Model name" || true
cargo bench --bench train_step --no-run 2>&1 | grep -E "^error" || true
for m in $METHODS; do
    for r in $(seq "$ROUNDS"); do
        line=$(SELFSUP_BENCH_METHOD=$m SELFSUP_BENCH_HEAD_WIDTH=$HEAD_WIDTH SELFSUP_BENCH_BATCH=$BATCH \
            SELFSUP_BENCH_WIDTH=$WIDTH SELFSUP_BENCH_STEPS=$STEPS SELFSUP_BENCH_OPTIMIZER=$OPTIMIZER \
            cargo bench --bench train_step 2>/dev/null | grep "median" || true)
        echo "${line:-selfsup $m failed}"
        if [ -n "$line" ]; then
            echo "$m selfsup $(echo "$line" | sed -E 's/.*median ([0-9.]+).*/\1/')" >>"$LOG"
        fi
        # shellcheck disable=SC2086
        line=$("$PY" benches/reference/cifar10_torch.py --method "$m" --width "$WIDTH" --batch "$BATCH" \
            --head-width "$HEAD_WIDTH" \
            $TORCH_OPTIMIZER --data "$DATA" --step-bench "$STEPS" 2>/dev/null | grep "median" || true)
        echo "${line:-pytorch $m failed}"
        if [ -n "$line" ]; then
            echo "$m torch $(echo "$line" | sed -E 's/.*median ([0-9.]+).*/\1/')" >>"$LOG"
        fi
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
    if len(r) < 2:  # one tool failed every round (e.g. a method it cannot run at this batch)
        fmt = lambda tool: f"{statistics.median(r[tool]):.1f}" if tool in r else "failed"
        print(f"| {method} | {fmt('selfsup')} | {fmt('torch')} | |")
        continue
    s, t = statistics.median(r["selfsup"]), statistics.median(r["torch"])
    print(f"| {method} | {s:.1f} | {t:.1f} | **{s / t:.2f}x** |")
PYEOF
rm -f "$LOG"
