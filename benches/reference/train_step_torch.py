"""The PyTorch side of `cargo bench --bench train_step`: one BYOL training step on a ResNet-18
with the CIFAR stem (3x3 conv, no max-pool) at a given width, paper heads (4096 / 256),
SGD momentum 0.9 + weight decay 5e-4, EMA target update; two 32x32 views of random pixels.
Written from the BYOL paper's formulas (no lightly), eager mode.

    python benches/reference/train_step_torch.py [--device cuda|cpu] [--width 16] [--batch 256] [--steps 5] [--no-tf32]
"""
import argparse
import copy
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar_resnet import CifarResNet18

p = argparse.ArgumentParser()
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--width", type=int, default=16)
p.add_argument("--batch", type=int, default=256)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--no-tf32", action="store_true",
               help="strict float32 convolutions (cuDNN uses TF32 tensor cores by default)")
a = p.parse_args()
dev = torch.device(a.device)
if a.no_tf32:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

resnet = CifarResNet18(a.width)
dim = 8 * a.width


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, o))


online = nn.Sequential(resnet, mlp(dim, 4096, 256)).to(dev)
predictor = mlp(256, 4096, 256).to(dev)
target = copy.deepcopy(online)
for q in target.parameters():
    q.requires_grad = False
params = list(online.parameters()) + list(predictor.parameters())
opt = torch.optim.SGD(params, lr=0.06, momentum=0.9, weight_decay=5e-4)
x1 = torch.randn(a.batch, 3, 32, 32, device=dev)
x2 = torch.randn(a.batch, 3, 32, 32, device=dev)


def byol(p, z):
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


rates = []
for step in range(a.steps + 1):
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    p1, p2 = predictor(online(x1)), predictor(online(x2))
    with torch.no_grad():
        z1, z2 = target(x1), target(x2)
    loss = byol(p1, z2) + byol(p2, z1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for o, g in zip(online.parameters(), target.parameters()):
            g.mul_(0.99).add_(o, alpha=0.01)
    value = loss.item()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    s = time.perf_counter() - t
    if step > 0:
        rates.append(a.batch / s)
print(
    f"PyTorch {torch.__version__} BYOL train step, ResNet-18 CIFAR stem width {a.width}, batch {a.batch}, "
    f"32x32, device {dev} (TF32 convolutions {torch.backends.cudnn.allow_tf32}, matmuls "
    f"{torch.backends.cuda.matmul.allow_tf32}): median {statistics.median(rates):.1f} images/s "
    f"(min {min(rates):.1f}, max {max(rates):.1f}) over {a.steps} steps, last loss {value:.4f}"
)
