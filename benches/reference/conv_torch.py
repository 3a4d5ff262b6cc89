"""PyTorch side of benches/conv.sh: 2-D convolution GFLOP/s per layer shape.

Same shapes (benches/conv_shapes.csv), batch, repetitions and FLOP count as benches/conv.rs:
forward under no_grad, and forward + backward of `y.sum()` with gradients for the input and
the weight (3x the forward FLOPs). f32, no bias, torch's default CPU threads (oneDNN).
Prints `impl,name,fwd_gflops,fwdbwd_gflops` rows. `SELFSUP_BENCH_PASSES=1` also times each
pass alone (forward; input gradient and weight gradient each by `aten.convolution_backward`
with only that output asked for) and prints `passes,torch,name,forward_ms,input_grad_ms,
weight_grad_ms` to stderr, as benches/conv.rs does for selfsup.
"""

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def median_seconds(reps, run):
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    batch = int(os.environ.get("SELFSUP_BENCH_BATCH", "128"))
    reps = max(1, int(os.environ.get("SELFSUP_BENCH_REPS", "5")))
    passes = os.environ.get("SELFSUP_BENCH_PASSES") == "1"
    wanted = [s for s in os.environ.get("SELFSUP_BENCH_SHAPES", "").split(",") if s]
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "conv_shapes.csv")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
          f"median of {reps}", file=sys.stderr)
    print("impl,name,fwd_gflops,fwdbwd_gflops")
    torch.manual_seed(1)
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, *fields = line.split(",")
        if wanted and not any(name == w[:-1] if w.endswith("$") else name.startswith(w)
                              for w in wanted):
            continue
        cin, h, w, cout, k, stride, pad = map(int, fields)
        out_h = (h + 2 * pad - k) // stride + 1
        out_w = (w + 2 * pad - k) // stride + 1
        gflop = 2.0 * batch * cout * out_h * out_w * cin * k * k / 1e9
        x = torch.randn(batch, cin, h, w)
        weight = torch.randn(cout, cin, k, k) * (2.0 / (cin * k * k)) ** 0.5

        def forward():
            with torch.no_grad():
                F.conv2d(x, weight, stride=stride, padding=pad)

        xg = x.clone().requires_grad_(True)
        wg = weight.clone().requires_grad_(True)

        def forward_backward():
            xg.grad = None
            wg.grad = None
            F.conv2d(xg, wg, stride=stride, padding=pad).sum().backward()

        fwd = median_seconds(reps, forward)
        both = median_seconds(reps, forward_backward)
        print(f"torch,{name},{gflop / fwd:.1f},{3 * gflop / both:.1f}", flush=True)
        if passes:
            dy = torch.randn(batch, cout, out_h, out_w)

            def backward(mask):
                return lambda: torch.ops.aten.convolution_backward(
                    dy, x, weight, None, [stride, stride], [pad, pad], [1, 1], False, [0, 0], 1,
                    mask)

            millis = [1e3 * median_seconds(reps, run) for run in
                      (forward, backward([True, False, False]), backward([False, True, False]))]
            print(f"passes,torch,{name}," + ",".join(f"{m:.2f}" for m in millis), file=sys.stderr,
                  flush=True)


if __name__ == "__main__":
    main()
