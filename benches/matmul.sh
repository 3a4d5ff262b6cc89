#!/usr/bin/env bash
# The linear layers' matrix products side by side: `cargo bench --bench matmul` (burn's flex
# `matmul`; the `gemm` crate alone, called as flex calls it, into a reused output; and
# selfsup's linear-layer kernels, which training runs) and
# benches/reference/matmul_torch.py (PyTorch's BLAS), alternating for
# SELFSUP_BENCH_ROUNDS rounds (default 3); prints the median milliseconds and GFLOP/s of each
# shape and layout (NN forward, NT input gradient, TN weight gradient), the ratio of
# selfsup's linear-layer kernels to PyTorch, and each tool's share of the machine's f32 FMA
# peak (the bench's `peak` row: vector FMAs on registers only, on all threads).
# Usage: benches/matmul.sh   (env: SELFSUP_BENCH_ROUNDS, SELFSUP_BENCH_SHAPES, SELFSUP_BENCH_REPS;
# SELFSUP_REF_PYTHON, else the environment of ../shared/tools/setup-pytorch-reference.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
ROUNDS=${SELFSUP_BENCH_ROUNDS:-3}
ROWS=$(mktemp)
date -u; nproc; lscpu | grep "Model name" || true
cargo bench --bench matmul --no-run 2>&1 | grep -E "^error" || true
for round in $(seq "$ROUNDS"); do
    cargo bench --bench matmul 2>/dev/null | grep -v "^impl" >>"$ROWS"
    "$PY" benches/reference/matmul_torch.py 2>/dev/null | grep -v "^impl" >>"$ROWS"
done
"$PY" - "$ROWS" <<'PYEOF'
import statistics, sys
ms, peaks = {}, []
for line in open(sys.argv[1]):
    tool, layout, shape, millis, gflops = line.strip().split(",")
    if tool == "peak":
        peaks.append(float(gflops))
        continue
    ms.setdefault((shape, layout), {}).setdefault(tool, []).append(float(millis))
peak = statistics.median(peaks)
print(f"f32 FMA peak of this machine on the bench's threads: {peak:.0f} GFLOP/s (median of {len(peaks)})")
print("| product (M x K x N) | layout | flex `matmul` ms | `gemm` alone ms | selfsup `linear` ms | PyTorch ms | `linear` GFLOP/s (% of peak) | PyTorch GFLOP/s (% of peak) | `linear` / PyTorch |")
print("|---|---|---|---|---|---|---|---|---|")
for (shape, layout), tools in ms.items():
    m, k, n = (int(d) for d in shape.split("x"))
    s, g, l, t = (statistics.median(tools[tool]) for tool in ("selfsup", "gemm", "linear", "torch"))
    gf = lambda v: 2 * m * k * n / v / 1e6
    share = lambda v: f"{gf(v):.0f} ({100 * gf(v) / peak:.0f}%)"
    print(f"| {shape} | {layout} | {s:.2f} | {g:.2f} | {l:.2f} | {t:.2f} | {share(l)} | {share(t)} | {t / l:.2f}x |")
PYEOF
