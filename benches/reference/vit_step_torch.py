"""PyTorch reference of `cargo bench --bench train_step` with a ViT (SELFSUP_BENCH_BACKBONE=vit-N):
one training step of DINO, LeJEPA, MAE or I-JEPA on torchvision's VisionTransformer (4-pixel
patches on 32x32 random views, width 192, 3 heads, MLP 768, N blocks), AdamW (lr 5e-4, weight
decay 0.05), the same heads, decoders, predictors, masks and losses as selfsup's CIFAR presets
(heads x HEAD_WIDTH). Prints the median images/s over the timed steps, like the Rust bench.

Usage: vit_step_torch.py --method dino|lejepa|mae|ijepa [--depth 12] [--batch 64] [--steps 5]
       [--head-width 0.25] [--threads 2]
Written from the papers' formulas and reference code for this benchmark (no lightly).
"""
import argparse
import copy
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from vit_torch import IjepaPredictor, MaeDecoder, lejepa_loss, mlp, tokens
from vit_torch import vit as make_vit

P, IMG, D, HEADS, MLP = 4, 32, 192, 3, 768


def vit(depth):
    return make_vit(IMG, P, depth, D, HEADS, MLP)


class Dino(nn.Module):
    def __init__(self, depth, hw):
        super().__init__()
        h, bott, out = int(2048 * hw), int(256 * hw), int(4096 * hw)
        self.student = vit(depth)
        self.head = nn.Sequential(nn.Linear(D, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, bott))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bott, out, bias=False))
        self.last.parametrizations.weight.original0.requires_grad = False
        self.teacher = copy.deepcopy(nn.ModuleList([self.student, self.head, self.last]))
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.register_buffer("center", torch.zeros(1, out))

    def project(self, nets, x):
        z = nets[1](tokens(nets[0], x)[:, 0])
        return nets[2](F.normalize(z, dim=-1))

    def loss(self, views):
        s = [self.project([self.student, self.head, self.last], v) for v in views]
        with torch.no_grad():
            t = [self.project(self.teacher, v) for v in views]
        total, pairs = 0.0, 0
        for i, ti in enumerate(t):
            q = F.softmax((ti - self.center) / 0.04, -1)
            for j, sj in enumerate(s):
                if i != j:
                    total = total + torch.sum(-q * F.log_softmax(sj / 0.1, -1), -1).mean()
                    pairs += 1
        self.t = torch.cat(t)
        return total / pairs

    def after(self):
        with torch.no_grad():
            self.center.mul_(0.9).add_(0.1 * self.t.mean(0, keepdim=True))
            online = [self.student, self.head, self.last]
            for a, b in zip(self.teacher.parameters(), nn.ModuleList(online).parameters()):
                a.mul_(0.996).add_(0.004 * b)


class Lejepa(nn.Module):
    def __init__(self, depth, hw):
        super().__init__()
        h = int(2048 * hw)
        self.net = vit(depth)
        self.proj = mlp([D, h, h, 64])

    def loss(self, views):
        return lejepa_loss(torch.stack([self.proj(tokens(self.net, v)[:, 0]) for v in views]))

    def after(self):
        pass


class Mae(nn.Module):
    def __init__(self, depth, hw):
        super().__init__()
        self.net = vit(depth)
        self.decoder = MaeDecoder(D, 256, 4, 8, P, IMG)

    def loss(self, views):
        return self.decoder.loss(self.net, views[0])

    def after(self):
        pass


class Ijepa(nn.Module):
    def __init__(self, depth, hw):
        super().__init__()
        self.net = vit(depth)
        self.target = copy.deepcopy(self.net)
        for p in self.target.parameters():
            p.requires_grad = False
        self.predictor = IjepaPredictor(D, 96, 4, 4, P, IMG)

    def loss(self, views):
        return self.predictor.loss(self.net, self.target, views[0])

    def after(self):
        with torch.no_grad():
            for a, b in zip(self.target.parameters(), self.net.parameters()):
                a.mul_(0.996).add_(0.004 * b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--method", required=True, choices=["dino", "lejepa", "mae", "ijepa"])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--head-width", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = {"dino": Dino, "lejepa": Lejepa, "mae": Mae, "ijepa": Ijepa}[a.method](a.depth, a.head_width)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=5e-4, weight_decay=0.05)
    views = [torch.randn(a.batch, 3, IMG, IMG) for _ in range(2)]
    rates = []
    for step in range(a.steps + 1):
        start = time.perf_counter()
        loss = model.loss(views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.after()
        seconds = time.perf_counter() - start
        if step > 0:
            rates.append(a.batch / seconds)
    print(f"{a.method} torch ViT depth {a.depth}: median {statistics.median(rates):.1f} images/s "
          f"(min {min(rates):.1f}, max {max(rates):.1f}) over {a.steps} steps")


if __name__ == "__main__":
    main()
