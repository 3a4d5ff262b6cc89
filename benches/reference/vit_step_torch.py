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
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

P, IMG, D, HEADS, MLP = 4, 32, 192, 3, 768
GRID = IMG // P
N = GRID * GRID


def vit(depth):
    m = VisionTransformer(IMG, P, depth, HEADS, D, MLP)
    m.heads = nn.Identity()
    return m


def tokens(m, x, keep=None):
    """Output tokens [B, 1+K, D] of the kept patches (all without `keep`), class token first."""
    b = x.shape[0]
    t = m.conv_proj(x).flatten(2).transpose(1, 2) + m.encoder.pos_embedding[:, 1:]
    if keep is not None:
        t = torch.gather(t, 1, keep.unsqueeze(-1).expand(-1, -1, D))
    cls = (m.class_token + m.encoder.pos_embedding[:, :1]).expand(b, -1, -1)
    h = torch.cat([cls, t], 1)
    for layer in m.encoder.layers:
        h = layer(h)
    return m.encoder.ln(h)


def sincos(grid, dim):
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for pos in (c.flatten(), r.flatten()):
        a = pos[:, None].double() * omega[None]
        parts += [a.sin(), a.cos()]
    return torch.cat(parts, 1).float()  # [N, dim]


def mlp(dims, bn=True, last_bias=True):
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=last_bias if last else not bn))
        if not last:
            if bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


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
        t = torch.linspace(0, 3, 17)
        w = torch.full((17,), 2 * 3 / 16)
        w[[0, -1]] = 3 / 16
        self.register_buffer("t", t)
        self.register_buffer("phi", torch.exp(-t * t / 2))
        self.register_buffer("w", w * torch.exp(-t * t / 2))

    def loss(self, views):
        z = torch.stack([self.proj(tokens(self.net, v)[:, 0]) for v in views])
        a = torch.randn(z.shape[-1], 1024)
        a = a / a.norm(dim=0)
        x = (z @ a).unsqueeze(-1) * self.t
        err = (x.cos().mean(-3) - self.phi) ** 2 + x.sin().mean(-3) ** 2
        sig = (err @ self.w * z.shape[-2]).mean()
        inv = (z.mean(0) - z).square().mean()
        return 0.05 * sig + 0.95 * inv

    def after(self):
        pass


class Mae(nn.Module):
    def __init__(self, depth, hw):
        super().__init__()
        dd = 256
        self.net = vit(depth)
        self.embed = nn.Linear(D, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.blocks = nn.Sequential(*[EncoderBlock(8, dd, 4 * dd, 0.0, 0.0) for _ in range(4)])
        self.norm = nn.LayerNorm(dd, eps=1e-6)
        self.pred = nn.Linear(dd, P * P * 3)
        self.register_buffer("pos", torch.cat([torch.zeros(1, dd), sincos(GRID, dd)]))

    def loss(self, views):
        x = views[0]
        b = x.shape[0]
        k = N // 4
        order = torch.argsort(torch.rand(b, N), 1)
        restore = torch.argsort(order, 1)
        h = self.embed(tokens(self.net, x, order[:, :k]))
        m = self.mask_token.expand(b, N - k, -1)
        full = torch.gather(torch.cat([h[:, 1:], m], 1), 1, restore.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        h = torch.cat([h[:, :1], full], 1) + self.pos
        pred = self.pred(self.norm(self.blocks(h)))[:, 1:]
        t = x.reshape(b, 3, GRID, P, GRID, P).permute(0, 2, 4, 3, 5, 1).reshape(b, N, -1)
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
        mask = (restore >= k).float()
        return (((pred - t) ** 2).mean(-1) * mask).sum() / mask.sum()

    def after(self):
        pass


def blocks_masks(b, targets=4):
    """I-JEPA multi-block masks: one block size per batch; context minus the targets."""
    s = 0.15 + 0.05 * torch.rand(1).item()
    a = math.exp(math.log(0.75) + (math.log(1.5) - math.log(0.75)) * torch.rand(1).item())
    th = max(1, min(GRID - 1, round(math.sqrt(s * N * a))))
    tw = max(1, min(GRID - 1, round(math.sqrt(s * N / a))))
    cs = max(1, min(GRID - 1, round(math.sqrt((0.85 + 0.15 * torch.rand(1).item()) * N))))
    ctx, tgt = [], []
    for _ in range(b):
        blocks = []
        covered = torch.zeros(GRID, GRID, dtype=torch.bool)
        for _ in range(targets):
            r, c = torch.randint(0, GRID - th + 1, (1,)).item(), torch.randint(0, GRID - tw + 1, (1,)).item()
            m = torch.zeros(GRID, GRID, dtype=torch.bool)
            m[r:r + th, c:c + tw] = True
            covered |= m
            blocks.append(m.flatten().nonzero().flatten())
        r, c = torch.randint(0, GRID - cs + 1, (1,)).item(), torch.randint(0, GRID - cs + 1, (1,)).item()
        m = torch.zeros(GRID, GRID, dtype=torch.bool)
        m[r:r + cs, c:c + cs] = True
        ctx.append((m & ~covered).flatten().nonzero().flatten())
        tgt.append(blocks)
    kc = max(1, min(len(c) for c in ctx))
    keep = torch.stack([c[:kc] if len(c) else torch.zeros(1, dtype=torch.long) for c in ctx])
    return keep, [torch.stack([t[j] for t in tgt]) for j in range(targets)]


class Ijepa(nn.Module):
    def __init__(self, depth, hw):
        super().__init__()
        dp = 96
        self.net = vit(depth)
        self.target = copy.deepcopy(self.net)
        for p in self.target.parameters():
            p.requires_grad = False
        self.embed = nn.Linear(D, dp)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dp))
        self.blocks = nn.Sequential(*[EncoderBlock(4, dp, 4 * dp, 0.0, 0.0) for _ in range(4)])
        self.norm = nn.LayerNorm(dp, eps=1e-6)
        self.proj = nn.Linear(dp, D)
        self.register_buffer("pos", sincos(GRID, dp))

    def loss(self, views):
        x = views[0]
        b = x.shape[0]
        keep, targets = blocks_masks(b)
        with torch.no_grad():
            t = F.layer_norm(tokens(self.target, x)[:, 1:], (D,))
        ctx = self.embed(tokens(self.net, x, keep)[:, 1:]) + self.pos[keep]
        seqs, goals = [], []
        for block in targets:
            q = self.mask_token + self.pos[block]
            seqs.append(torch.cat([ctx, q], 1))
            goals.append(torch.gather(t, 1, block.unsqueeze(-1).expand(-1, -1, D)))
        h = self.norm(self.blocks(torch.cat(seqs)))[:, ctx.shape[1]:]
        return F.smooth_l1_loss(self.proj(h), torch.cat(goals))

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
