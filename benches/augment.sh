#!/usr/bin/env bash
# Side by side: selfsup's augmentation / loader bench, then the torchvision reference, in one run.
# Usage: benches/augment.sh [CIFAR_TRAIN_DIR]   (PyTorch env: ../shared/tools/setup-pytorch-reference.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/data/cifar10/train}
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
date -u; nproc; lscpu | grep "Model name" || true
SELFSUP_CIFAR_DIR="$DIR" cargo bench --bench augment 2>&1 | grep -vE "^ +(Compiling|Finished|Running)"
"$PY" benches/reference/augment_torchvision.py "$DIR" 2>&1 | grep -v -i warning
