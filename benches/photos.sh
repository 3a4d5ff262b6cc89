#!/usr/bin/env bash
# Side by side, the 224-pixel pipeline from photographs: selfsup (cargo bench --bench photos)
# and PIL + lightly / torchvision (benches/reference/photos_torchvision.py), alternating tool by
# tool for SELFSUP_PHOTO_ROUNDS rounds (default 3) so both see the same machine load.
# Usage: benches/photos.sh [PHOTOS_DIR]   (default ../shared/data/photos)
# PyTorch env: ../shared/tools/setup-pytorch-reference.sh (or SELFSUP_REF_PYTHON).
# Pillow-SIMD: SELFSUP_PILLOW_SIMD=<site-packages of a venv with pillow-simd> adds a third run
# with it first on PYTHONPATH (installed with CC="cc -mavx2" pip install pillow-simd).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-../shared/data/photos}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
date -u; nproc; lscpu | grep "Model name" || true
cargo bench --bench photos --no-run 2>&1 | grep -E "^error" || true
for round in $(seq "${SELFSUP_PHOTO_ROUNDS:-3}"); do
    echo "== round $round: selfsup"
    SELFSUP_PHOTOS_DIR="$DIR" cargo bench --bench photos 2>&1 | grep -vE "^ +(Compiling|Finished|Running)"
    echo "== round $round: PIL"
    "$PY" benches/reference/photos_torchvision.py "$DIR" 2>&1 | grep -v -i warning
    if [ -n "${SELFSUP_PILLOW_SIMD:-}" ]; then
        echo "== round $round: Pillow-SIMD"
        PYTHONPATH="$SELFSUP_PILLOW_SIMD" "$PY" benches/reference/photos_torchvision.py "$DIR" 2>&1 \
            | grep -v -i warning
    fi
done
