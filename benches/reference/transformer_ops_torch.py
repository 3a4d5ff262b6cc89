"""The ViT step's fused operations in PyTorch, one call each on the ViT-Tiny step's shapes; the
counterpart of `cargo bench --bench transformer_ops`, printing the same CSV rows: the exact GELU
forward (F.gelu) and backward (aten.gelu_backward) on [4160, 768], layer norm forward
(aten.native_layer_norm) and backward (aten.native_layer_norm_backward) on [4160, 192],
attention from the packed [4160, 576] projections as torchvision's ViT runs it in training
(nn.MultiheadAttention: F.scaled_dot_product_attention on per-head views), forward, and backward
(autograd through it to the packed projections). Environment: SELFSUP_BENCH_REPS (default 21),
SELFSUP_BENCH_ROWS (token rows of the GELU and layer norm calls, default 4160)."""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

reps = max(1, int(os.environ.get("SELFSUP_BENCH_REPS", "21")))
STEP_ROWS, WIDTH, MLP, IMAGES, TOKENS, HEADS = 64 * 65, 192, 768, 64, 65, 3
rows = int(os.environ.get("SELFSUP_BENCH_ROWS", str(STEP_ROWS)))
threads = torch.get_num_threads()
print(f"torch {torch.__version__} transformer ops, {threads} threads, median of {reps}", file=sys.stderr)


def values(*shape):
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 7919) % 8000).float() / 1000.0 - 4.0).reshape(shape)


def report(operation, count, run):
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times)
    print(f"torch,{operation},{ms:.3f},{ms * 1e6 * threads / count:.2f}")


print("impl,operation,ms,ns_per_value")
with torch.no_grad():
    hidden, grad = values(rows, MLP), values(rows, MLP)
    report("gelu_forward", hidden.numel(), lambda: F.gelu(hidden))
    report("gelu_backward", hidden.numel(), lambda: torch.ops.aten.gelu_backward(grad, hidden))
    tokens, token_grad = values(rows, WIDTH), values(rows, WIDTH)
    gamma, beta = values(WIDTH), values(WIDTH)
    report("layer_norm_forward", tokens.numel(),
           lambda: torch.ops.aten.native_layer_norm(tokens, [WIDTH], gamma, beta, 1e-6))
    _, mean, rstd = torch.ops.aten.native_layer_norm(tokens, [WIDTH], gamma, beta, 1e-6)
    report("layer_norm_backward", tokens.numel(),
           lambda: torch.ops.aten.native_layer_norm_backward(
               token_grad, tokens, [WIDTH], mean, rstd, gamma, beta, [True, True, True]))

qkv = (values(STEP_ROWS, 3 * WIDTH) * 0.25).requires_grad_(True)


def attention(qkv):
    # [B·N, 3D] -> q, k, v [B, H, N, d_h], as nn.MultiheadAttention splits the packed projection.
    q, k, v = qkv.view(IMAGES, TOKENS, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(q, k, v)
    return context.transpose(1, 2).reshape(STEP_ROWS, WIDTH)


# With autograd recording, as in training (the kernel keeps what its backward needs).
report("attention_forward", qkv.numel(), lambda: attention(qkv))
context = attention(qkv)
context_grad = values(STEP_ROWS, WIDTH)
report("attention_backward", qkv.numel(),
       lambda: torch.autograd.grad(context, qkv, context_grad, retain_graph=True))
