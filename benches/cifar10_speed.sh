#!/usr/bin/env bash
# End-to-end training throughput on CIFAR-10, side by side with PyTorch, each tool with its own
# loader (JPEG decoding and augmentation included): the CIFAR-10 benchmark's recipe, training
# only (`--train-only`), on the first LIMIT training images of each class. For each round and
# method: selfsup (examples/cifar10_benchmark.rs), then PyTorch (benches/reference/cifar10_torch.py),
# alternating so both see the same machine; then the median per tool and the ratio.
# Usage: benches/cifar10_speed.sh [ROUNDS] [LIMIT] [METHODS...]
#        (default: 2 rounds, 1000 images per class (39 steps of 256), byol simsiam barlow swav
#        vicreg moco dino deepcluster; simclr too)
# Data: tar -xJf ../shared/data/cifar10-train.tar.xz -C target/data   (SELFSUP_CIFAR_DIR overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
LIMIT=${2:-1000}
shift 2 || shift $# || true
METHODS=${*:-byol simsiam barlow swav vicreg moco dino deepcluster}
DATA=${SELFSUP_CIFAR_DIR:-target/data/cifar10/train}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
OUT=${SELFSUP_BENCH_OUT:-target/bench/cifar10-speed}
mkdir -p "$OUT"
date -u; nproc; lscpu | grep "Model name" || true
cargo build --release --example cifar10_benchmark 2>&1 | grep -E "^error" || true
for r in $(seq "$ROUNDS"); do
    for m in $METHODS; do
        # Each method's preset in both tools (no optimiser flags: VICReg LARS lr 0.3, DINO LARS
        # lr 0.3, DeepCluster-v2 LARS lr 0.6, the others SGD lr 0.12), plus SELFSUP_BENCH_ARGS
        # (e.g. "--optimizer sgd --lr 0.01").
        # shellcheck disable=SC2086
        set -- ${SELFSUP_BENCH_ARGS:-}
        "${CARGO_TARGET_DIR:-target}/release/examples/cifar10_benchmark" --method "$m" --epochs 1 \
            --limit "$LIMIT" "$@" --data "$DATA" --train-only --out "$OUT/$m-selfsup-$r.json" >/dev/null
        "$PY" benches/reference/cifar10_torch.py --method "$m" --epochs 1 --limit "$LIMIT" "$@" \
            --data "$DATA" --train-only --out "$OUT/$m-torch-$r.json" >/dev/null 2>&1
        echo "round $r $m done"
    done
done
"$PY" - "$OUT" "$ROUNDS" $METHODS <<'PYEOF'
import json, statistics, sys
out, rounds, methods = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| method | selfsup images/s (each round) | PyTorch images/s (each round) | median ratio |")
print("|---|---|---|---|")
for m in methods:
    rate = lambda tool: [json.load(open(f"{out}/{m}-{tool}-{r}.json"))["train_images_per_second"]
                         for r in range(1, rounds + 1)]
    s, t = rate("selfsup"), rate("torch")
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)
    print(f"| {m} | {fmt(s)} | {fmt(t)} | **{statistics.median(s) / statistics.median(t):.2f}x** |")
PYEOF
