"""Vision-transformer pieces of the PyTorch references (vit_step_torch.py, cifar10_torch.py):
torchvision's VisionTransformer as the encoder, MAE's decoder, I-JEPA's multi-block masks and
predictor, LeJEPA's SIGReg, each with selfsup's CIFAR-preset semantics. Written from the papers'
formulas and reference code (MAE: He et al. 2022, facebookresearch/mae; I-JEPA: Assran et al.
2023, facebookresearch/ijepa; LeJEPA: Balestriero & LeCun 2025), no lightly.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer


def vit(image=32, patch=4, depth=12, width=192, heads=3, mlp=768):
    """torchvision's ViT without its classifier head (selfsup's parameter names)."""
    m = VisionTransformer(image, patch, depth, heads, width, mlp)
    m.heads = nn.Identity()
    return m


def tokens(m, x, keep=None):
    """Output tokens [B, 1+K, D] of the kept patches (all without `keep`), class token first:
    the encoder never sees the other patches."""
    b, d = x.shape[0], m.hidden_dim
    t = m.conv_proj(x).flatten(2).transpose(1, 2) + m.encoder.pos_embedding[:, 1:]
    if keep is not None:
        t = torch.gather(t, 1, keep.unsqueeze(-1).expand(-1, -1, d))
    cls = (m.class_token + m.encoder.pos_embedding[:, :1]).expand(b, -1, -1)
    h = torch.cat([cls, t], 1)
    for layer in m.encoder.layers:
        h = layer(h)
    return m.encoder.ln(h)


class Pooled(nn.Module):
    """The encoder's pooled feature: the class token (`cls`) or the mean of the patch tokens
    (`mean`), after the final LayerNorm."""

    def __init__(self, net, pool="cls"):
        super().__init__()
        self.net, self.pool = net, pool

    def forward(self, x):
        t = tokens(self.net, x)
        return t[:, 0] if self.pool == "cls" else t[:, 1:].mean(1)


def sincos(grid, dim):
    """MAE's fixed 2-D sin-cos position embeddings [grid^2, dim] (columns, then rows)."""
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for pos in (c.flatten(), r.flatten()):
        a = pos[:, None].double() * omega[None]
        parts += [a.sin(), a.cos()]
    return torch.cat(parts, 1).float()


def mlp(dims, bn=True, last_bias=True):
    """Linear (bias-free before BN) BN ReLU ... Linear: lightly's LeJEPA projector shape."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=last_bias if last else not bn))
        if not last:
            if bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MaeDecoder(nn.Module):
    """MAE's decoder: embed the encoder's visible tokens to width `dd`, put mask tokens at the
    masked positions, add fixed sin-cos positions, `depth` pre-norm blocks, LayerNorm, predict
    each patch's pixels. `loss(net, x)` encodes 1 - `ratio` of each image's patches (a random
    subset per image) and returns the per-patch-normalised pixel MSE on the masked patches."""

    def __init__(self, width, dd=256, depth=4, heads=8, patch=4, image=32, ratio=0.75):
        super().__init__()
        self.patch, self.grid, self.ratio = patch, image // patch, ratio
        self.embed = nn.Linear(width, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.blocks = nn.Sequential(*[EncoderBlock(heads, dd, 4 * dd, 0.0, 0.0) for _ in range(depth)])
        self.norm = nn.LayerNorm(dd, eps=1e-6)
        self.pred = nn.Linear(dd, patch * patch * 3)
        self.register_buffer("pos", torch.cat([torch.zeros(1, dd), sincos(self.grid, dd)]))
        reference_init(self)

    def loss(self, net, x):
        b, n, p, g = x.shape[0], self.grid * self.grid, self.patch, self.grid
        k = int(n * (1 - self.ratio))
        order = torch.argsort(torch.rand(b, n), 1)
        restore = torch.argsort(order, 1)
        h = self.embed(tokens(net, x, order[:, :k]))
        m = self.mask_token.expand(b, n - k, -1)
        full = torch.gather(torch.cat([h[:, 1:], m], 1), 1, restore.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        h = torch.cat([h[:, :1], full], 1) + self.pos
        pred = self.pred(self.norm(self.blocks(h)))[:, 1:]
        t = x.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, n, -1)
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
        mask = (restore >= k).float()
        return (((pred - t) ** 2).mean(-1) * mask).sum() / mask.sum()


def reference_init(module):
    """MAE's `_init_weights`, which selfsup's decoder and predictor follow: Xavier-uniform
    linear weights with zero biases, the mask token from N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(module.mask_token, std=0.02)


def blocks_masks(b, grid, targets=4, min_context=10):
    """I-JEPA's multi-block masks, as the reference collator makes them: one target block size
    (scale 0.15-0.2 and aspect 0.75-1.5 from one uniform draw) and one context size (scale 0.85-1, square) per batch;
    per image, `targets` blocks at random places and the context block minus the targets (redrawn
    until it keeps `min_context` patches), cut to the batch's shortest context. Returns the context indices [B, Kc] and the target blocks."""
    n = grid * grid
    # The reference's block size: one uniform u for both the area and the aspect ratio.
    u = torch.rand(1).item()
    k, a = int((0.15 + 0.05 * u) * n), 0.75 + 0.75 * u
    th = max(1, min(grid - 1, round(math.sqrt(k * a))))
    tw = max(1, min(grid - 1, round(math.sqrt(k / a))))
    cs = max(1, min(grid - 1, round(math.sqrt(int((0.85 + 0.15 * torch.rand(1).item()) * n)))))
    ctx, tgt = [], []
    for _ in range(b):
        # Redraw until the context keeps min_context patches (the official collator's min_keep:
        # it retries too), at most 100 times, as selfsup does.
        for _ in range(100):
            blocks = []
            covered = torch.zeros(grid, grid, dtype=torch.bool)
            for _ in range(targets):
                r, c = torch.randint(0, grid - th + 1, (1,)).item(), torch.randint(0, grid - tw + 1, (1,)).item()
                m = torch.zeros(grid, grid, dtype=torch.bool)
                m[r:r + th, c:c + tw] = True
                covered |= m
                blocks.append(m.flatten().nonzero().flatten())
            r, c = torch.randint(0, grid - cs + 1, (1,)).item(), torch.randint(0, grid - cs + 1, (1,)).item()
            m = torch.zeros(grid, grid, dtype=torch.bool)
            m[r:r + cs, c:c + cs] = True
            context = (m & ~covered).flatten().nonzero().flatten()
            if len(context) >= max(1, min(min_context, n // 4)):
                break
        ctx.append(context)
        tgt.append(blocks)
    kc = max(1, min(len(c) for c in ctx))
    keep = torch.stack([c[:kc] if len(c) else torch.zeros(1, dtype=torch.long) for c in ctx])
    return keep, [torch.stack([t[j] for t in tgt]) for j in range(targets)]


class IjepaPredictor(nn.Module):
    """I-JEPA's narrow predictor: context tokens embedded to width `dp` plus their sin-cos
    positions, followed by mask tokens at each target block's positions; `depth` blocks,
    LayerNorm, back to the encoder's width. `loss(net, target, x)`: smooth-L1 (beta 1) between
    the predictions and the target encoder's layer-normed tokens of the target blocks."""

    def __init__(self, width, dp=96, depth=4, heads=4, patch=4, image=32):
        super().__init__()
        self.grid, self.width = image // patch, width
        self.embed = nn.Linear(width, dp)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dp))
        self.blocks = nn.Sequential(*[EncoderBlock(heads, dp, 4 * dp, 0.0, 0.0) for _ in range(depth)])
        self.norm = nn.LayerNorm(dp, eps=1e-6)
        self.proj = nn.Linear(dp, width)
        self.register_buffer("pos", sincos(self.grid, dp))
        reference_init(self)

    def loss(self, net, target, x):
        keep, targets = blocks_masks(x.shape[0], self.grid)
        with torch.no_grad():
            t = F.layer_norm(tokens(target, x)[:, 1:], (self.width,))
        ctx = self.embed(tokens(net, x, keep)[:, 1:]) + self.pos[keep]
        seqs, goals = [], []
        for block in targets:
            q = self.mask_token + self.pos[block]
            seqs.append(torch.cat([ctx, q], 1))
            goals.append(torch.gather(t, 1, block.unsqueeze(-1).expand(-1, -1, self.width)))
        h = self.norm(self.blocks(torch.cat(seqs)))[:, ctx.shape[1]:]
        return F.smooth_l1_loss(self.proj(h), torch.cat(goals))


def sigreg_weights(knots=17, t_max=3.0):
    """SIGReg's grid t, the standard Gaussian's characteristic function there, and the
    trapezoidal weights times that function (the Epps-Pulley weighting)."""
    t = torch.linspace(0, t_max, knots)
    w = torch.full((knots,), 2 * t_max / (knots - 1))
    w[[0, -1]] = t_max / (knots - 1)
    phi = torch.exp(-t * t / 2)
    return t, phi, w * phi


def lejepa_loss(z, lam=0.05, vectors=1024, knots=17, t_max=3.0):
    """LeJEPA with two or more global views `z` [V, N, D] (no local crops): lam x SIGReg (the
    Epps-Pulley statistic of N projections on `vectors` random unit directions, averaged over
    the directions and views) + (1 - lam) x the mean squared distance of each view to the views'
    mean."""
    t, phi, w = sigreg_weights(knots, t_max)
    a = torch.randn(z.shape[-1], vectors)
    a = a / a.norm(dim=0)
    x = (z @ a).unsqueeze(-1) * t
    err = (x.cos().mean(-3) - phi) ** 2 + x.sin().mean(-3) ** 2
    sig = (err @ w * z.shape[-2]).mean()
    inv = (z.mean(0) - z).square().mean()
    return lam * sig + (1 - lam) * inv
