#!/usr/bin/env bash
# The ViT step's fused operations side by side: `cargo bench --bench transformer_ops` (selfsup's
# GELU, layer norm and attention kernels) and benches/reference/transformer_ops_torch.py
# (PyTorch's), alternating for SELFSUP_BENCH_ROUNDS rounds (default 3); prints the median
# milliseconds and CPU nanoseconds per value of each operation and the ratio PyTorch / selfsup.
# Usage: benches/transformer_ops.sh   (env: SELFSUP_BENCH_ROUNDS, SELFSUP_BENCH_REPS,
# SELFSUP_BENCH_ROWS; SELFSUP_REF_PYTHON, else the environment of
# ../shared/tools/setup-pytorch-reference.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
ROUNDS=${SELFSUP_BENCH_ROUNDS:-3}
ROWS=$(mktemp)
date -u; nproc; lscpu | grep "Model name" || true
cargo bench --bench transformer_ops --no-run 2>&1 | grep -E "^error" || true
for round in $(seq "$ROUNDS"); do
    cargo bench --bench transformer_ops 2>/dev/null | grep -v "^impl" >>"$ROWS"
    "$PY" benches/reference/transformer_ops_torch.py 2>/dev/null | grep -v "^impl" >>"$ROWS"
done
"$PY" - "$ROWS" <<'PYEOF'
import statistics, sys
ms, ns = {}, {}
for line in open(sys.argv[1]):
    tool, operation, millis, per_value = line.strip().split(",")
    ms.setdefault(operation, {}).setdefault(tool, []).append(float(millis))
    ns.setdefault(operation, {}).setdefault(tool, []).append(float(per_value))
print("| operation | selfsup ms | PyTorch ms | selfsup CPU ns per value | PyTorch CPU ns per value | PyTorch / selfsup |")
print("|---|---|---|---|---|---|")
for operation, tools in ms.items():
    s, t = statistics.median(tools["selfsup"]), statistics.median(tools["torch"])
    sn, tn = statistics.median(ns[operation]["selfsup"]), statistics.median(ns[operation]["torch"])
    print(f"| {operation} | {s:.2f} | {t:.2f} | {sn:.2f} | {tn:.2f} | {t / s:.2f}x |")
PYEOF
