"""The projection heads' matrix products in PyTorch, with a linear layer's three operand layouts:
forward x @ w (NN), input gradient dy @ w.T (NT), weight gradient x.T @ dy (TN); the counterpart
of `cargo bench --bench matmul`, printing the same CSV rows. Environment: SELFSUP_BENCH_SHAPES
(comma-separated MxKxN, default as the Rust bench), SELFSUP_BENCH_REPS (default 11)."""
import os
import statistics
import sys
import time

import torch

SHAPES = os.environ.get("SELFSUP_BENCH_SHAPES", "256x128x2048,256x2048x2048,128x512x8192,128x8192x8192,4160x192x576,4160x192x768,4160x768x192")
reps = max(1, int(os.environ.get("SELFSUP_BENCH_REPS", "11")))
print(f"torch {torch.__version__} matmul, {torch.get_num_threads()} threads, median of {reps}", file=sys.stderr)
print("impl,layout,shape,ms,gflops")
with torch.no_grad():
    for shape in SHAPES.split(","):
        m, k, n = (int(d) for d in shape.split("x"))
        x, w, dy = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
        for layout, product in (("NN", lambda: x @ w), ("NT", lambda: dy @ w.T), ("TN", lambda: x.T @ dy)):
            product()
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                product()
                times.append((time.perf_counter() - start) * 1e3)
            ms = statistics.median(times)
            print(f"torch,{layout},{shape},{ms:.3f},{2 * m * k * n / ms / 1e6:.1f}")
