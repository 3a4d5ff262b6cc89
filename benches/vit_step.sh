#!/usr/bin/env bash
# ViT training-step throughput, side by side with PyTorch: DINO, LeJEPA, MAE and I-JEPA on
# ViT-Tiny with 4-pixel patches (32x32 random views, width 192, 3 heads; DEPTH blocks, default
# 12), heads x0.25, batch 64, AdamW. For each method and round, `cargo bench --bench
# train_step` (SELFSUP_BENCH_BACKBONE=vit-DEPTH) then `benches/reference/vit_step_torch.py`,
# alternating so both see the same machine; then the median per tool and the ratio.
# Usage: benches/vit_step.sh [ROUNDS] [METHODS...]   (default: 3 rounds, dino lejepa mae ijepa)
# Environment: SELFSUP_BENCH_STEPS (timed steps per round, default 5), SELFSUP_BENCH_BATCH,
# SELFSUP_VIT_DEPTH, SELFSUP_REF_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
shift || true
METHODS=${*:-dino lejepa mae ijepa}
STEPS=${SELFSUP_BENCH_STEPS:-5}
BATCH=${SELFSUP_BENCH_BATCH:-64}
DEPTH=${SELFSUP_VIT_DEPTH:-12}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
LOG=$(mktemp)
date -u; nproc; lscpu | grep "Model name" || true
cargo bench --bench train_step --no-run 2>&1 | grep -E "^error" || true
for m in $METHODS; do
    for r in $(seq "$ROUNDS"); do
        line=$(SELFSUP_BENCH_METHOD=$m SELFSUP_BENCH_BACKBONE=vit-$DEPTH SELFSUP_BENCH_HEAD_WIDTH=0.25 \
            SELFSUP_BENCH_BATCH=$BATCH SELFSUP_BENCH_STEPS=$STEPS \
            cargo bench --bench train_step 2>/dev/null | grep "median" || true)
        echo "${line:-selfsup $m failed}"
        [ -n "$line" ] && echo "$m selfsup $(echo "$line" | sed -E 's/.*median ([0-9.]+).*/\1/')" >>"$LOG"
        line=$("$PY" benches/reference/vit_step_torch.py --method "$m" --depth "$DEPTH" \
            --batch "$BATCH" --steps "$STEPS" --head-width 0.25 --threads "$(nproc)" | grep median || true)
        echo "${line:-pytorch $m failed}"
        [ -n "$line" ] && echo "$m torch $(echo "$line" | sed -E 's/.*median ([0-9.]+).*/\1/')" >>"$LOG"
    done
done
"$PY" - "$LOG" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, tool, v = line.split()
    rows.setdefault(m, {}).setdefault(tool, []).append(float(v))
print("| method | selfsup images/s (median of rounds) | PyTorch images/s | selfsup / PyTorch |")
print("|---|---|---|---|")
for m, r in rows.items():
    s, t = statistics.median(r.get("selfsup", [float("nan")])), statistics.median(r.get("torch", [float("nan")]))
    print(f"| {m} | {s:.1f} | {t:.1f} | {s / t:.2f}x |")
PYEOF
