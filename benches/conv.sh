#!/usr/bin/env bash
# Side by side: selfsup's fast conv and burn's flex conv (benches/conv.rs), then PyTorch
# (benches/reference/conv_torch.py), on every shape of benches/conv_shapes.csv, for
# SELFSUP_BENCH_ROUNDS rounds (default 1), the tools alternating round by round; prints a
# markdown table of forward and forward+backward GFLOP/s (the median over rounds) with the
# ratios to PyTorch. Each tool runs all its shapes in one process, as training does: a fresh
# process per shape would time PyTorch's first allocations (page faults) on the small shapes.
# Usage: benches/conv.sh   (env: SELFSUP_BENCH_ROUNDS, SELFSUP_BENCH_BATCH, SELFSUP_BENCH_REPS,
# SELFSUP_BENCH_SHAPES, SELFSUP_BENCH_IMPLS, SELFSUP_BENCH_PASSES; PyTorch env from
# ../shared/tools/setup-pytorch-reference.sh, or SELFSUP_REF_PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${SELFSUP_REF_PYTHON:-$HOME/.cache/selfsup-ref/bin/python}
ROUNDS=${SELFSUP_BENCH_ROUNDS:-1}
OUT=$(mktemp -d)
date -u; nproc; lscpu | grep "Model name" || true
echo "rounds $ROUNDS, batch ${SELFSUP_BENCH_BATCH:-128}, median of ${SELFSUP_BENCH_REPS:-5} per round"
cargo bench --bench conv --no-run 2>&1 | grep -E "^error" || true
echo "impl,name,fwd_gflops,fwdbwd_gflops" >"$OUT/rust.csv"
echo "impl,name,fwd_gflops,fwdbwd_gflops" >"$OUT/torch.csv"
for round in $(seq "$ROUNDS"); do
    cargo bench --bench conv 2>&1 >"$OUT/one.csv" | grep -vE "^ +(Compiling|Finished|Running)" || true
    tail -n +2 "$OUT/one.csv" >>"$OUT/rust.csv"
    # PyTorch's version line once (its stderr is always read, so it never meets a closed pipe).
    "$PY" benches/reference/conv_torch.py 2>&1 >"$OUT/one.csv" \
        | if [ "$round" = 1 ]; then cat; else cat >/dev/null; fi
    tail -n +2 "$OUT/one.csv" >>"$OUT/torch.csv"
done
"$PY" - "$OUT/rust.csv" "$OUT/torch.csv" <<'PYEOF'
import csv, statistics, sys
rounds = {}
for path in sys.argv[1:]:
    for r in csv.DictReader(open(path)):
        rounds.setdefault(r["name"], {}).setdefault(r["impl"], []).append(
            (float(r["fwd_gflops"]), float(r["fwdbwd_gflops"])))
# The median over rounds of each figure.
rows = {name: {impl: tuple(statistics.median(v[i] for v in values) for i in range(2))
               for impl, values in impls.items()} for name, impls in rounds.items()}
print("| layer | selfsup fwd | flex fwd | torch fwd | selfsup fwd+bwd | flex fwd+bwd | torch fwd+bwd | selfsup/torch fwd+bwd | flex/torch fwd+bwd |")
print("|---|---|---|---|---|---|---|---|---|")
ratios = []
for name, r in rows.items():
    s, f, t = r.get("selfsup"), r.get("flex"), r.get("torch")
    if not (s and f and t):
        continue
    ratios.append(s[1] / t[1])
    print(f"| {name} | {s[0]:.0f} | {f[0]:.0f} | {t[0]:.0f} | {s[1]:.0f} | {f[1]:.0f} | {t[1]:.0f} | {s[1]/t[1]:.2f}x | {f[1]/t[1]:.2f}x |")
if ratios:
    print(f"\nselfsup/torch fwd+bwd: median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, "
          f"{sum(r >= 1.0 for r in ratios)}/{len(ratios)} shapes at >= 1.0x, "
          f"{sum(r >= 0.8 for r in ratios)}/{len(ratios)} at >= 0.8x")
fixed = [i for i in ("im2col", "im2col-l2", "winograd", "winograd-4x4", "direct", "direct-channels") if any(i in r for r in rows.values())]
if fixed:  # SELFSUP_BENCH_IMPLS with the algorithm fixed: what the measured choice chose between
    print("\n| layer | " + " | ".join(f"{i} fwd+bwd" for i in fixed) + " | selfsup (measured choice) fwd+bwd | torch fwd+bwd |")
    print("|---|" + "---|" * (len(fixed) + 2))
    for name, r in rows.items():
        cells = [f"{r[i][1]:.0f}" if i in r else "-" for i in fixed + ["selfsup", "torch"]]
        print(f"| {name} | " + " | ".join(cells) + " |")
PYEOF
echo; echo "Raw rows (impl,name,fwd_gflops,fwdbwd_gflops):"; cat "$OUT/rust.csv" "$OUT/torch.csv"
