"""VICReg's and Barlow Twins' losses of two [N, D] batches, forward + backward, with the reference
code's D x D formulas (benches/reference/cifar10_torch.py's `vicreg` and `barlow`); the
counterpart of `cargo bench --bench redundancy_losses`. Environment: SELFSUP_BENCH_SHAPES
(default 256x2048,128x8192), SELFSUP_BENCH_REPS (default 7)."""
import os
import statistics
import time

import torch
import torch.nn.functional as F


def standardise(z):
    return F.batch_norm(z, None, None, training=True, eps=1e-5)


def barlow(z1, z2, lam=0.0051):
    c = standardise(z1).T @ standardise(z2) / z1.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lam * off


def vicreg(z1, z2):
    inv = F.mse_loss(z1, z2)

    def var(z):
        return F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()

    def cov(z):
        n, d = z.shape
        z = z - z.mean(0)
        c = z.T @ z / (n - 1)
        return (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()) / d

    return 25 * inv + 25 * (var(z1) + var(z2)) / 2 + (cov(z1) + cov(z2))


reps = max(1, int(os.environ.get("SELFSUP_BENCH_REPS", "7")))
print(f"PyTorch {torch.__version__} redundancy losses, forward + backward, {torch.get_num_threads()} threads")
for shape in os.environ.get("SELFSUP_BENCH_SHAPES", "256x2048,128x8192").split(","):
    n, d = map(int, shape.split("x"))
    z1 = torch.randn(n, d, requires_grad=True)
    z2 = torch.randn(n, d, requires_grad=True)
    for name, loss in [("vicreg", vicreg), ("barlow", barlow)]:
        times = []
        for rep in range(reps + 1):
            start = time.perf_counter()
            z1.grad = z2.grad = None
            loss(z1, z2).backward()
            if rep:
                times.append((time.perf_counter() - start) * 1e3)
        print(f"{name} {n}x{d} torch: median {statistics.median(times):.1f} ms")
