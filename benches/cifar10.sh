#!/usr/bin/env bash
# CIFAR-10 benchmark, side by side: for each method, selfsup (examples/cifar10_benchmark.rs)
# then the PyTorch reference (benches/reference/cifar10_torch.py) with the same recipe, one
# after the other on the same machine; then a markdown table of kNN / linear-probe top-1,
# training images/s and peak RSS, with the ratios.
# Usage: benches/cifar10.sh [EPOCHS] [METHODS...]
#        (default: 2 epochs, byol simsiam barlow swav vicreg moco dino deepcluster; simclr too)
# Recipes: by default no optimiser flags are passed, so both tools use each method's CIFAR preset
# (lr per 256 images x batch / 256, per-step cosine, no warmup; every 1-D parameter (biases,
# norms) without weight decay, and without LARS adaptation): BYOL, SimSiam, Barlow Twins, SwAV,
# SimCLR, MoCo v2: SGD momentum 0.9, wd 5e-4, lr 0.12; VICReg: LARS eta 0.02, wd 1e-4, lr 0.3;
# DINO: LARS, wd 1e-6, lr 0.3, per-parameter gradient clipping at 3; DeepCluster-v2: LARS,
# wd 1e-6, lr 0.6 to 0.0006. SELFSUP_VICREG_ARGS is added to VICReg's runs (e.g.
# "--optimizer sgd --lr 0.01", the earlier recipe), SELFSUP_BENCH_ARGS to every run of both
# tools (e.g. "--knn-every", "--warmup 1", or "--optimizer sgd --lr 0.12" for the old common
# recipe).
# mae, ijepa and lejepa-vit (LeJEPA on the ViT) run on a small ViT (SELFSUP_VIT_ARGS, default
# "--vit-depth 4 --vit-width 128 --decoder-depth 2": 4 blocks of width 128, 2 heads, MLP 512,
# 4-pixel patches; MAE's decoder 2 blocks of 128, I-JEPA's predictor 2 blocks of 64), small
# enough that 4 epochs take about 40 minutes per tool on 2 cores; lejepa runs on the ResNet.
# Data: tar -xJf ../shared/data/cifar10-train.tar.xz -C target/data   (SELFSUP_CIFAR_DIR overrides)
# PyTorch env: ../shared/tools/setup-pytorch-reference.sh (or SELFSUP_REF_PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-2}
shift || true
METHODS=${*:-byol simsiam barlow swav vicreg moco dino deepcluster}
DATA=${SELFSUP_CIFAR_DIR:-target/data/cifar10/train}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
OUT=${SELFSUP_BENCH_OUT:-target/bench/cifar10}
mkdir -p "$OUT"
date -u; nproc; lscpu | grep "Model name" || true
cargo build --release --example cifar10_benchmark 2>&1 | grep -E "^(error|warning: unused)" || true
for m in $METHODS; do
    # The method's preset in both tools. (VICReg diverges, NaN within 10 steps, with SGD at
    # lr 0.12 in both tools and 0.03 in selfsup; with SGD it needs lr 0.01, with its LARS preset
    # it trains at 0.3 and learns faster.)
    RECIPE=""
    METHOD=$m
    VIT=${SELFSUP_VIT_ARGS:---vit-depth 4 --vit-width 128 --decoder-depth 2}
    case $m in
        vicreg) RECIPE=${SELFSUP_VICREG_ARGS:-} ;;
        mae) RECIPE="$VIT --decoder-width 128" ;;
        ijepa) RECIPE="$VIT --decoder-width 64" ;;
        lejepa-vit) RECIPE="$VIT"; METHOD=lejepa ;;
    esac
    # shellcheck disable=SC2086
    set -- $RECIPE ${SELFSUP_BENCH_ARGS:-}
    echo "== $m: selfsup ($*)"
    "${CARGO_TARGET_DIR:-target}/release/examples/cifar10_benchmark" --method "$METHOD" --epochs "$EPOCHS" \
        "$@" --data "$DATA" --out "$OUT/$m-selfsup.json" 2>&1 | grep -vE "^\s*$" | tail -n 3 \
        || echo "selfsup $m failed"
    echo "== $m: pytorch ($*)"
    "$PY" benches/reference/cifar10_torch.py --method "$METHOD" --epochs "$EPOCHS" "$@" \
        --data "$DATA" --out "$OUT/$m-torch.json" 2>&1 | grep -v -i warning | tail -n 2 \
        || echo "pytorch $m failed"
done
"$PY" - "$OUT" $METHODS <<'PYEOF'
import json, os, sys
out, methods = sys.argv[1], sys.argv[2:]
print("| method | tool | epochs | kNN top-1 | linear top-1 | random-init kNN / linear | raw-pixel kNN | train images/s | peak RSS (MiB) |")
print("|---|---|---|---|---|---|---|---|---|")
for m in methods:
    runs = {}
    for tool in ("selfsup", "torch"):
        path = os.path.join(out, f"{m}-{tool}.json")
        if os.path.exists(path):
            runs[tool] = json.load(open(path))
    for tool, r in runs.items():
        print(f"| {m} | {r['tool']} | {r['epochs']} | {100*r['knn_top1']:.2f}% | {100*r['probe_top1']:.2f}% | "
              f"{100*r['random_knn_top1']:.2f}% / {100*r['random_probe_top1']:.2f}% | {100*r['raw_pixel_knn_top1']:.2f}% | "
              f"{r['train_images_per_second']:.1f} | {r['peak_rss_mib_training']:.0f} |")
    if len(runs) == 2:
        s, t = runs["selfsup"], runs["torch"]
        print(f"| {m} | selfsup vs PyTorch | | {100*(s['knn_top1']-t['knn_top1']):+.2f} points | "
              f"{100*(s['probe_top1']-t['probe_top1']):+.2f} points | | | "
              f"{s['train_images_per_second']/t['train_images_per_second']:.2f}x | "
              f"{s['peak_rss_mib_training']/t['peak_rss_mib_training']:.2f}x |")
PYEOF
