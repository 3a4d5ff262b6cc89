"""PyTorch side of benches/cifar10.sh: the CIFAR-10 benchmark recipe of
examples/cifar10_benchmark.rs, written from the papers' formulas with torch and torchvision only.

Same data split (the last 500 images of each class held out), network (ResNet-18, CIFAR stem,
width 16), heads (the papers' at a quarter width; `--head-width 1` for the papers' own), views
(lightly's presets at 32 px, no blur), optimiser (each method's CIFAR preset, lr per 256 images
x batch / 256: BYOL, SimSiam, Barlow Twins, SwAV, SimCLR, MoCo v2: SGD momentum 0.9, weight
decay 5e-4, lr 0.12; VICReg: LARS momentum 0.9, eta 0.02, weight decay 1e-4, lr 0.3; DINO:
LARS, weight decay 1e-6, lr 0.3, gradients clipped to norm 3 per parameter; DeepCluster-v2:
LARS, weight decay 1e-6, lr 0.6 to 0.0006; biases and norm parameters (every 1-D parameter)
without weight decay in every optimiser, and without LARS adaptation; optional linear warmup,
then per-step cosine to the final lr),
target networks (BYOL EMA 0.99 -> 1, cosine; MoCo v2 key encoder 0.99; DINO teacher
0.996 -> 1, cosine), evaluation (kNN k=200 T=0.1 with the training images as the bank,
linear probe with Adam on standardised frozen features, raw-pixel kNN, random-init encoder).
Loader: torchvision ImageFolder + DataLoader with 2 worker processes, decoding JPEGs every epoch,
as a PyTorch user runs it.
Methods: byol, simsiam, barlow (or barlow-twins), swav, vicreg, simclr, moco, dino, deepcluster,
lejepa; mae and ijepa with --vit-depth (torchvision's VisionTransformer, 4-pixel patches, width
--vit-width, heads of 64, MLP 4 x width; MAE's decoder and I-JEPA's predictor of
--decoder-depth blocks of --decoder-width, heads of 32: benches/reference/vit_torch.py). MAE:
AdamW betas (0.9, 0.95), weight decay 0.05, lr 1.5e-4; I-JEPA: AdamW, weight decay 0.04 -> 0.4
along a cosine, lr 1.25e-4, target encoder 0.996 -> 1; LeJEPA: AdamW, weight decay 0.05,
lr 5e-4, DINO's two global views; AdamW leaves biases, norms, position embeddings, class and mask
tokens undecayed.
DeepCluster-v2 uses min(1000, training images) prototypes per head (--limit / --step-bench runs
with fewer images than prototypes).

    python benches/reference/cifar10_torch.py --method byol --epochs 2 [--data DIR] [--out FILE]
"""
import argparse
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

from cifar_resnet import CifarResNet18
from vit_torch import IjepaPredictor, MaeDecoder, Pooled, lejepa_loss, mlp, vit

p = argparse.ArgumentParser()
METHODS = ["byol", "simsiam", "barlow", "barlow-twins", "swav", "vicreg", "simclr", "moco", "dino", "deepcluster",
           "lejepa", "mae", "ijepa"]
p.add_argument("--method", default="byol", choices=METHODS)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--data", default="target/data/cifar10/train")
p.add_argument("--out")
p.add_argument("--limit", type=int)
p.add_argument("--width", type=int, default=16)
p.add_argument("--vit-depth", type=int, help="a ViT of this many blocks instead of the ResNet-18")
p.add_argument("--vit-width", type=int, default=192)
p.add_argument("--vit-pool", choices=["cls", "mean"], help="default: mean for ijepa, cls otherwise")
p.add_argument("--decoder-depth", type=int, help="MAE decoder / I-JEPA predictor blocks (default 4)")
p.add_argument("--decoder-width", type=int, help="their width (default: MAE 256, I-JEPA 96)")
p.add_argument("--batch", type=int, default=256)
p.add_argument("--head-width", type=float, default=0.25,
               help="the heads' width multiplier (0.25; 1.0: the papers' heads), as SELFSUP_BENCH_HEAD_WIDTH")
p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, views and order")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--lr", type=float, help="base learning rate, scaled by batch / 256 (default: the method's preset)")
p.add_argument("--warmup", type=int, default=0, help="epochs of linear warmup before the cosine")
p.add_argument("--optimizer", choices=["sgd", "lars", "adamw"], help="default: the method's preset")
p.add_argument("--weight-decay", type=float,
               help="default: the preset's, or 5e-4 (SGD) / 1e-4 (LARS) when --optimizer changes the kind")
p.add_argument("--lars-eta", type=float, default=0.02, help="LARS trust coefficient")
p.add_argument("--eval-encoder", choices=["online", "target"], default="online",
               help="evaluate the online backbone or the momentum target's (byol, moco, dino, ijepa)")
p.add_argument("--knn-every", action="store_true",
               help="kNN on the validation split after every epoch (not counted as training time)")
p.add_argument("--train-only", action="store_true",
               help="skip the final evaluations (for throughput runs)")
p.add_argument("--step-bench", type=int, metavar="STEPS",
               help="only time STEPS training steps (after one warm-up step) on random 32x32 views, "
                    "no loader, and print the median images/s (the PyTorch side of benches/train_step.sh)")
a = p.parse_args()
a.method = "barlow" if a.method == "barlow-twins" else a.method
# Each method's CIFAR preset: (optimiser, base lr per 256 images, weight decay, final lr of the
# cosine (absolute, not scaled)).
PRESETS = {
    "byol": ("sgd", 0.12, 5e-4, 0.0),
    "simsiam": ("sgd", 0.12, 5e-4, 0.0),
    "barlow": ("sgd", 0.12, 5e-4, 0.0),
    "swav": ("sgd", 0.12, 5e-4, 0.0),
    "simclr": ("sgd", 0.12, 5e-4, 0.0),
    "moco": ("sgd", 0.12, 5e-4, 0.0),
    "vicreg": ("lars", 0.3, 1e-4, 0.0),
    "dino": ("lars", 0.3, 1e-6, 0.0),
    "deepcluster": ("lars", 0.6, 1e-6, 0.0006),
    "mae": ("adamw", 1.5e-4, 0.05, 0.0),
    "ijepa": ("adamw", 1.25e-4, 0.04, 0.0),
    "lejepa": ("adamw", 5e-4, 0.05, 0.0),
}
# The weight decay at the last step (a cosine from the first), and AdamW's betas.
WEIGHT_DECAY_END = {"ijepa": 0.4}.get(a.method)
ADAM_BETAS = {"mae": (0.9, 0.95)}.get(a.method, (0.9, 0.999))
preset_optimizer, preset_lr, preset_wd, final_lr = PRESETS[a.method]
a.optimizer = a.optimizer or preset_optimizer
a.lr = a.lr if a.lr is not None else preset_lr
if a.weight_decay is None:
    a.weight_decay = preset_wd if a.optimizer == preset_optimizer else {"sgd": 5e-4, "lars": 1e-4, "adamw": 0.05}[a.optimizer]
if a.method in ("mae", "ijepa") and not a.vit_depth:
    p.error(f"{a.method} needs --vit-depth")
torch.manual_seed(a.seed)
started = time.perf_counter()

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def view(scale, jitter, solarize):
    steps = [
        T.RandomResizedCrop(32, scale=scale),
        T.RandomHorizontalFlip(0.5),
        T.RandomApply([T.ColorJitter(*jitter)], p=0.8),
        T.RandomGrayscale(0.2),
    ]
    if solarize > 0:
        steps.append(T.RandomSolarize(128, p=solarize))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(MEAN, STD)])


BYOL_JITTER, MOCO_JITTER, SIMCLR_JITTER = (0.4, 0.4, 0.2, 0.1), (0.4, 0.4, 0.4, 0.1), (0.8, 0.8, 0.8, 0.2)
VIEWS = {
    "byol": [view((0.08, 1), BYOL_JITTER, 0.0), view((0.08, 1), BYOL_JITTER, 0.2)],
    "barlow": [view((0.08, 1), BYOL_JITTER, 0.0), view((0.08, 1), BYOL_JITTER, 0.2)],
    "simsiam": [view((0.2, 1), MOCO_JITTER, 0.0)] * 2,
    "vicreg": [view((0.08, 1), BYOL_JITTER, 0.1)] * 2,
    "swav": [view((0.14, 1), SIMCLR_JITTER, 0.0)] * 2,
    "simclr": [view((0.08, 1), SIMCLR_JITTER, 0.0)] * 2,
    "moco": [view((0.2, 1), MOCO_JITTER, 0.0)] * 2,
    "dino": [view((0.4, 1), BYOL_JITTER, 0.0), view((0.4, 1), BYOL_JITTER, 0.2)],
    "deepcluster": [view((0.14, 1), SIMCLR_JITTER, 0.0)] * 2,
    "lejepa": [view((0.4, 1), BYOL_JITTER, 0.0), view((0.4, 1), BYOL_JITTER, 0.2)],
    # MAE and I-JEPA: one crop (and flip for MAE), no colour distortion; the masks come in the loss.
    "mae": [T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1)), T.RandomHorizontalFlip(0.5),
                       T.ToTensor(), T.Normalize(MEAN, STD)])],
    "ijepa": [T.Compose([T.RandomResizedCrop(32, scale=(0.3, 1)), T.ToTensor(), T.Normalize(MEAN, STD)])],
}[a.method]
EVAL = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


class Views(torch.utils.data.Dataset):
    def __init__(self, base, indices, transforms):
        self.base, self.indices, self.transforms = base, indices, transforms

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        image, label = self.base[self.indices[i]]
        return [t(image) for t in self.transforms], label, i


base = torchvision.datasets.ImageFolder(a.data)
by_class = {}
for i, label in enumerate(base.targets):
    by_class.setdefault(label, []).append(i)
train_idx = [i for c in sorted(by_class) for i in by_class[c][:-500][: a.limit]]
val_idx = [i for c in sorted(by_class) for i in by_class[c][-500:]]
print(f"CIFAR-10 from {a.data}: {len(train_idx)} training images, {len(val_idx)} validation images", flush=True)


def block(i, o, bias, norm="bn", act=True):
    layers = [nn.Linear(i, o, bias=bias)]
    if norm == "bn":
        layers.append(nn.BatchNorm1d(o))
    elif norm == "bn-noaffine":
        layers.append(nn.BatchNorm1d(o, affine=False))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return layers


def s(d):
    return max(1, round(d * a.head_width))


class L2Norm(nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=-1)


class NormedLinear(nn.Module):
    """Bias-free Linear whose rows are L2-normalised in forward: weight normalisation with the
    per-unit scale g frozen at 1 (DINO's last layer); v starts from PyTorch's default init."""

    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(i, o, bias=False).weight.detach().clone())

    def forward(self, x):
        return F.linear(x, F.normalize(self.weight, dim=1))


def dino_head(i, hidden, bottleneck, out):
    """Linear GELU Linear GELU Linear (weights N(0, 0.02) truncated, zero biases), L2
    normalisation, then the weight-normalised last layer."""
    mlp = [nn.Linear(i, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)]
    for m in mlp:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return mlp + [L2Norm(), NormedLinear(bottleneck, out)]


dim = a.vit_width if a.vit_depth else 8 * a.width


def make_backbone():
    """The ResNet-18 at --width, or the ViT of --vit-depth blocks with its pooled feature."""
    if not a.vit_depth:
        return CifarResNet18(a.width)
    pool = a.vit_pool or ("mean" if a.method == "ijepa" else "cls")
    return Pooled(vit(32, 4, a.vit_depth, a.vit_width, max(1, a.vit_width // 64), 4 * a.vit_width), pool)


def decoder_shape(depth, width):
    d = a.decoder_width or width
    return dict(dd=d, depth=a.decoder_depth or depth, heads=max(1, d // 32)) if a.method == "mae" else \
        dict(dp=d, depth=a.decoder_depth or depth, heads=max(1, d // 32))


projector, predictor = {
    "byol": lambda: (block(dim, s(4096), True) + block(s(4096), s(256), True, None, False),
                     block(s(256), s(4096), True) + block(s(4096), s(256), True, None, False)),
    "simsiam": lambda: (block(dim, s(2048), False) + block(s(2048), s(2048), False)
                        + block(s(2048), s(2048), False, "bn-noaffine", False),
                        block(s(2048), s(512), False) + block(s(512), s(2048), True, None, False)),
    "barlow": lambda: (block(dim, s(8192), False) + block(s(8192), s(8192), False)
                       + block(s(8192), s(8192), False, None, False), None),
    "vicreg": lambda: (block(dim, s(8192), True) + block(s(8192), s(8192), True)
                       + block(s(8192), s(8192), False, None, False), None),
    "swav": lambda: (block(dim, s(2048), True) + block(s(2048), s(128), True, None, False), None),
    "simclr": lambda: (block(dim, s(2048), True) + block(s(2048), s(128), True, None, False), None),
    # MoCo v2: hidden width = the backbone's feature dimension (not scaled), no batch norm.
    "moco": lambda: (block(dim, dim, True, None) + block(dim, s(128), True, None, False), None),
    "dino": lambda: (dino_head(dim, s(2048), s(256), s(4096)), None),
    "deepcluster": lambda: (block(dim, s(2048), True) + block(s(2048), s(128), True, None, False), None),
    # LeJEPA: lightly's projector (2048 hidden at a quarter width, BN, 64 outputs).
    "lejepa": lambda: (list(mlp([dim, s(2048), s(2048), 64])), None),
    "mae": lambda: ([], [MaeDecoder(dim, **decoder_shape(4, 256))]),
    "ijepa": lambda: ([], [IjepaPredictor(dim, **decoder_shape(4, 96))]),
}[a.method]()
backbone = make_backbone()
online = nn.Sequential(backbone, nn.Sequential(*projector))
predictor = nn.Sequential(*predictor) if predictor else None
prototypes = nn.Linear(s(128), 3000, bias=False) if a.method == "swav" else None
# The target network: BYOL's EMA target, MoCo's key encoder, DINO's teacher (backbone + head).
target = None
if a.method in ("byol", "moco", "dino", "ijepa"):
    import copy

    target = copy.deepcopy(online)
    for q in target.parameters():
        q.requires_grad = False
# Method state (buffers, never trained): MoCo's queue, DINO's centre; DeepCluster's banks,
# prototypes and assignments are made once the number of training images is known.
# `pending` carries what a loss computed to the update after the optimizer step.
queue = F.normalize(torch.randn(4096, s(128)), dim=1) if a.method == "moco" else None
center = torch.zeros(1, s(4096)) if a.method == "dino" else None
banks, cluster_prototypes, assignments = None, None, None
pending = {}
if a.eval_encoder == "target" and target is None:
    sys.exit(f"--eval-encoder target: {a.method} keeps no momentum target")
# The backbone the evaluations read: the online one, or the target's (the I-JEPA and DINO papers').
eval_backbone = target[0] if a.eval_encoder == "target" else backbone


def cos(x, y):
    return F.cosine_similarity(x, y, dim=-1).mean()


def standardise(z):
    """Per-feature normalisation over the batch: BatchNorm1d(affine=False), biased variance."""
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


@torch.no_grad()
def sinkhorn(scores, iterations=3, eps=0.05):
    q = torch.exp(scores / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T


def swav(z1, z2, temperature=0.1):
    with torch.no_grad():
        prototypes.weight.copy_(F.normalize(prototypes.weight, dim=1))
    s1, s2 = prototypes(F.normalize(z1, dim=1)), prototypes(F.normalize(z2, dim=1))
    q1, q2 = sinkhorn(s1.detach()), sinkhorn(s2.detach())
    loss1 = -(q1 * F.log_softmax(s2 / temperature, dim=1)).sum(1).mean()
    loss2 = -(q2 * F.log_softmax(s1 / temperature, dim=1)).sum(1).mean()
    return (loss1 + loss2) / 2


def ntxent(z1, z2, temperature=0.5):
    """SimCLR's NT-Xent: each of the 2N normalised embeddings picks its partner among the
    other 2N - 1 (T 0.5, lightly's CIFAR benchmark)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, partners)


def moco(q1, q2, k1, k2, temperature=0.2):
    """Symmetric InfoNCE of each view's queries against the other view's keys (class 0) and
    the queue (the negatives)."""

    def infonce(q, k):
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))

    return (infonce(q1, k2) + infonce(q2, k1)) / 2


def teacher_temperature(epoch, warmup=0.04, final=0.07, epochs=30):
    """np.linspace(warmup, final, epochs)[epoch] during the first epochs, then final."""
    return warmup + (final - warmup) * epoch / (epochs - 1) if epoch < epochs else final


def dino(student, teacher, epoch, student_temperature=0.1):
    """Cross-entropy of the centred, sharpened teacher distribution of each global crop i to
    the student's of every other crop v, averaged over the pairs."""
    t_t = teacher_temperature(epoch)
    t_probs = [F.softmax((t - center) / t_t, dim=-1) for t in teacher]
    s_logp = [F.log_softmax(z / student_temperature, dim=-1) for z in student]
    losses = [-(t_probs[i] * s_logp[v]).sum(-1).mean()
              for i in range(len(t_probs)) for v in range(len(s_logp)) if v != i]
    return sum(losses) / len(losses)


def deepcluster(zs, idx, temperature=0.1):
    """Cross-entropy of each crop's prototype scores to its image's cluster, averaged over the
    heads and the crops."""
    losses = [F.cross_entropy(F.normalize(z, dim=1) @ c.T / temperature, a_h[idx])
              for c, a_h in zip(cluster_prototypes, assignments) for z in zs]
    return sum(losses) / len(losses)


@torch.no_grad()
def spherical_kmeans(x, k, iterations=10, generator=None, chunk=4096):
    """Spherical k-means of the unit rows of x: k-means++ seeding on the sphere (the first point
    uniform, each next drawn with probability proportional to its distance 2 - 2 cos to the
    nearest seed so far), `iterations` times [assign to the largest dot product, move each
    non-empty cluster's centroid to its mean, L2-normalise], then a final assignment."""
    n = x.shape[0]

    def assign(c):
        return torch.cat([(rows @ c.T).argmax(1) for rows in x.split(chunk)])

    chosen = [torch.randint(n, (1,), generator=generator).item()]
    nearest = (2 - 2 * x @ x[chosen[0]]).clamp_min(0)
    nearest[chosen[0]] = 0
    while len(chosen) < k:
        if nearest.sum() > 0:
            nxt = torch.multinomial(nearest, 1, generator=generator).item()
        else:  # every point coincides with a seed: take the first not yet chosen
            nxt = next(i for i in range(n) if i not in set(chosen))
        chosen.append(nxt)
        nearest = torch.minimum(nearest, (2 - 2 * x @ x[nxt]).clamp_min(0))
        nearest[nxt] = 0
    c = x[chosen].clone()
    for _ in range(iterations):
        labels = assign(c)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled].unsqueeze(1).to(c.dtype)
        c = F.normalize(c, dim=1)
    return c, assign(c)


def make_banks(n):
    """DeepCluster's memory banks, one per crop, [n, s(128)], random unit rows."""
    global banks
    banks = [F.normalize(torch.randn(n, s(128)), dim=1) for _ in VIEWS]


@torch.no_grad()
def cluster(epoch, heads=3, clusters=1000):
    """DeepCluster's clusters of `epoch`: head h runs spherical k-means on bank h % 2."""
    global cluster_prototypes, assignments
    k = min(clusters, banks[0].shape[0])
    if k < clusters and epoch == 0:
        print(f"deepcluster: {clusters} prototypes per head > {banks[0].shape[0]} images, using {k}", flush=True)
    cluster_prototypes, assignments = [], []
    for h in range(heads):
        seed = torch.Generator().manual_seed(1000 * epoch + h)
        c, labels = spherical_kmeans(banks[h % len(banks)], k, generator=seed)
        cluster_prototypes.append(c)
        assignments.append(labels)


def loss_of(views, idx, epoch):
    if a.method == "mae":
        return predictor[0].loss(backbone.net, views[0])
    if a.method == "ijepa":
        return predictor[0].loss(backbone.net, target[0].net, views[0])
    if a.method == "lejepa":
        return lejepa_loss(torch.stack([online(x) for x in views]))
    if a.method == "moco":
        q1, q2 = (F.normalize(online(x), dim=1) for x in views)
        with torch.no_grad():
            k1, k2 = (F.normalize(target(x), dim=1) for x in views)
        pending["keys"] = torch.cat([k1, k2])
        return moco(q1, q2, k1, k2)
    if a.method == "dino":
        student = [online(x) for x in views]
        with torch.no_grad():
            teacher = [target(x) for x in views]
        pending["teacher"] = torch.cat(teacher)
        return dino(student, teacher, epoch)
    x1, x2 = views
    z1, z2 = online(x1), online(x2)
    if a.method == "deepcluster":
        pending["projections"] = [F.normalize(z, dim=1).detach() for z in (z1, z2)]
        return deepcluster([z1, z2], idx)
    if a.method == "simclr":
        return ntxent(z1, z2)
    if a.method == "byol":
        p1, p2 = predictor(z1), predictor(z2)
        with torch.no_grad():
            t1, t2 = target(x1), target(x2)
        return (2 - 2 * cos(p1, t2)) + (2 - 2 * cos(p2, t1))
    if a.method == "simsiam":
        p1, p2 = predictor(z1), predictor(z2)
        return -(cos(p1, z2.detach()) + cos(p2, z1.detach())) / 2
    if a.method == "barlow":
        return barlow(z1, z2)
    if a.method == "vicreg":
        return vicreg(z1, z2)
    return swav(z1, z2)


named = list(online.named_parameters())
named += list(predictor.named_parameters()) if predictor else []
named += list(prototypes.named_parameters()) if prototypes else []
params = [q for _, q in named]
lr = a.lr * a.batch / 256
# Every 1-D parameter (biases, norm weights and biases) without weight decay, in every optimiser;
# and the ViT's position embeddings, class and mask tokens (MAE's and timm's no_weight_decay()).
TOKENS = ("pos_embedding", "class_token", "mask_token")
undecayed = [q.ndim <= 1 or name.split(".")[-1] in TOKENS for name, q in named]
param_groups = [dict(params=[q for q, u in zip(params, undecayed) if not u], weight_decay=a.weight_decay),
                dict(params=[q for q, u in zip(params, undecayed) if u], weight_decay=0.0)]


class Lars(torch.optim.Optimizer):
    """LARS (You et al. 2017), as the BYOL / Barlow Twins / VICReg papers use it: for a weight
    matrix or kernel w with gradient g, d = (g + wd w) * eta ||w|| / (||g|| + wd ||w||) (1 when
    a norm is 0), wd the parameter group's; biases and norm parameters (1-D) take d = g, no
    decay, no adaptation; then momentum buf = m buf + d and w -= lr buf. A parameter without
    a gradient is left alone, momentum included."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-4, eta=0.02, eps=1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                d = w.grad
                if w.ndim > 1:
                    wd, w_norm, g_norm = group["weight_decay"], w.norm(), d.norm()
                    ratio = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    d = (d + wd * w) * ratio
                state = self.state[w]
                if "buf" not in state:
                    state["buf"] = d.clone()
                else:
                    state["buf"].mul_(group["momentum"]).add_(d)
                w.add_(state["buf"], alpha=-group["lr"])


if a.optimizer == "lars":
    opt = Lars(param_groups, lr=lr, weight_decay=a.weight_decay, eta=a.lars_eta)
elif a.optimizer == "adamw":
    opt = torch.optim.AdamW(param_groups, lr=lr, betas=ADAM_BETAS, eps=1e-8, weight_decay=a.weight_decay)
else:
    opt = torch.optim.SGD(param_groups, lr=lr, momentum=0.9, weight_decay=a.weight_decay)


@torch.no_grad()
def features(encoder, indices, raw=False):
    if encoder is not None:
        encoder.eval()
    data = Views(base, indices, [EVAL])
    xs, ys = [], []
    for (x,), y, _ in torch.utils.data.DataLoader(data, batch_size=500, num_workers=a.workers):
        xs.append(x.flatten(1) if raw else encoder(x))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def knn(bank, bank_y, queries, query_y, k=200, t=0.1):
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    correct = 0
    for q, y in zip(queries.split(256), query_y.split(256)):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / t).exp()
        votes = torch.zeros(q.shape[0], 10).scatter_add_(1, bank_y[idx], weights)
        correct += (votes.argmax(1) == y).sum().item()
    return correct / len(query_y)


def train_step(views, idx, tau, epoch):
    """One step: loss, backward, optimiser step, then the method's updates: the EMA of the
    target network (weights with rate tau; BYOL also copies the buffers, MoCo's key encoder and
    DINO's teacher keep their own), MoCo's queue, DINO's centre, DeepCluster's banks. DINO
    clips each gradient to norm 3 and leaves its last layer alone during epoch 0. Returns the
    loss."""
    global queue, center
    loss = loss_of(views, idx, epoch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if a.method == "dino":
        for q in params:
            if q.grad is not None:
                coef = 3.0 / (q.grad.norm() + 1e-6)
                if coef < 1:
                    q.grad.mul_(coef)
        if epoch < 1:
            online[1][-1].weight.grad = None
    opt.step()
    with torch.no_grad():
        if target is not None:
            for o, t in zip(online.parameters(), target.parameters()):
                t.mul_(tau).add_(o, alpha=1 - tau)
            if a.method == "byol":
                for o, t in zip(online.buffers(), target.buffers()):
                    t.copy_(o)
        if a.method == "moco":  # newest keys first, the oldest 2B drop out
            queue = torch.cat([pending.pop("keys"), queue])[: queue.shape[0]]
        if a.method == "dino":
            center = 0.9 * center + 0.1 * pending.pop("teacher").mean(0, keepdim=True)
        if a.method == "deepcluster":
            for bank, z in zip(banks, pending.pop("projections")):
                bank[idx] = z
    return loss


# EMA rate of the target: BYOL 0.99 -> 1 and DINO 0.996 -> 1 along a cosine, MoCo constant 0.99.
EMA_BASE, EMA_COSINE = {"dino": 0.996, "ijepa": 0.996}.get(a.method, 0.99), a.method != "moco"


def ema_rate(step, total):
    if not EMA_COSINE:
        return EMA_BASE
    return 1 - (1 - EMA_BASE) * (math.cos(math.pi * step / total) + 1) / 2


if a.step_bench:
    import statistics

    x1, x2 = torch.randn(a.batch, 3, 32, 32), torch.randn(a.batch, 3, 32, 32)
    idx = torch.arange(a.batch)
    if a.method == "deepcluster":
        make_banks(a.batch)
        cluster(0)
    rates = []
    for i in range(a.step_bench + 1):
        t = time.perf_counter()
        last_loss = train_step([x1, x2], idx, ema_rate(0, 1), 0).item()
        if i > 0:
            rates.append(a.batch / (time.perf_counter() - t))
    print(f"PyTorch {torch.__version__} {a.method} train step, ResNet-18 CIFAR stem width {a.width}, heads x{a.head_width:g}, "
          f"batch {a.batch}, 32x32, {a.optimizer} wd {a.weight_decay:g}, {torch.get_num_threads()} threads: "
          f"median {statistics.median(rates):.1f} images/s "
          f"(min {min(rates):.1f}, max {max(rates):.1f}) over {a.step_bench} steps, last loss {last_loss:.4f}")
    raise SystemExit(0)
loader = torch.utils.data.DataLoader(Views(base, train_idx, VIEWS), batch_size=a.batch, shuffle=True,
                                     drop_last=True, num_workers=a.workers)
total = a.epochs * len(loader)
warmup = a.warmup * len(loader)


def lr_at(step):
    """Linear warmup from 0 over `warmup` steps, then cosine to final_lr (selfsup's WarmupCosine)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return final_lr + (lr - final_lr) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))



def wd_at(step):
    """The weight decay along a cosine from the preset's to WEIGHT_DECAY_END (selfsup's CosineSchedule)."""
    return WEIGHT_DECAY_END + (a.weight_decay - WEIGHT_DECAY_END) * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


step = 0
train_start = time.perf_counter()
epoch_rates, epoch_seconds, epoch_knn, epoch_loss = [], [], [], []
method_seconds = 0.0  # DeepCluster's initial pass and k-means (not counted as training time)
if a.method == "deepcluster":
    t = time.perf_counter()
    make_banks(len(train_idx))
    online.train()
    with torch.no_grad():  # fill the banks: one pass over the training loader, batch statistics
        for views, _, idx in loader:
            for bank, x in zip(banks, views):
                bank[idx] = F.normalize(online(x), dim=1)
    method_seconds += time.perf_counter() - t
for epoch in range(a.epochs):
    online.train()
    if target is not None:  # an --eval-encoder target kNN pass left it in eval mode
        target.train()
    if a.method == "deepcluster":
        t = time.perf_counter()
        cluster(epoch)
        method_seconds += time.perf_counter() - t
    epoch_start, seen, losses = time.perf_counter(), 0, []
    for views, _, idx in loader:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if WEIGHT_DECAY_END is not None:
            opt.param_groups[0]["weight_decay"] = wd_at(step)
        loss = train_step(views, idx, ema_rate(step, total), epoch)
        losses.append(loss.item())
        step += 1
        seen += views[0].shape[0]
        if step % 20 == 0:
            print(f"epoch {epoch} step {step}/{total} loss {loss.item():.4f} "
                  f"{seen / (time.perf_counter() - epoch_start):.1f} img/s", flush=True)
    epoch_rates.append(seen / (time.perf_counter() - epoch_start))
    epoch_seconds.append(time.perf_counter() - epoch_start)
    epoch_loss.append(sum(losses) / max(1, len(losses)))
    print(f"epoch {epoch} mean loss {epoch_loss[-1]:.4f} over {len(losses)} steps", flush=True)
    if a.knn_every:
        tx, ty = features(eval_backbone, train_idx)
        vx, vy = features(eval_backbone, val_idx)
        epoch_knn.append(knn(tx, ty, vx, vy))
        print(f"epoch {epoch} kNN top-1 {epoch_knn[-1]:.4f}", flush=True)
train_seconds = sum(epoch_seconds)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def probe(train_x, train_y, val_x, val_y, epochs=30, batch=256):
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    torch.manual_seed(0)
    linear = nn.Linear(train_x.shape[1], 10)
    opt = torch.optim.Adam(linear.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(train_x)).split(batch):
            loss = F.cross_entropy(linear(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (linear(val_x).argmax(1) == val_y).float().mean().item()


def evaluate(encoder):
    tx, ty = features(encoder, train_idx)
    vx, vy = features(encoder, val_idx)
    with torch.enable_grad():
        return knn(tx, ty, vx, vy), probe(tx, ty, vx, vy)


if a.train_only:
    knn_top1 = probe_top1 = random_knn = random_probe = raw_knn = None
else:
    knn_top1, probe_top1 = evaluate(eval_backbone)
    torch.manual_seed(a.seed)
    random_knn, random_probe = evaluate(make_backbone())
    rx, ry = features(None, train_idx, raw=True)
    qx, qy = features(None, val_idx, raw=True)
    raw_knn = knn(rx, ry, qx, qy)
summary = {
    "tool": f"pytorch {torch.__version__}",
    "method": a.method,
    "epochs": a.epochs,
    "eval_encoder": a.eval_encoder,
    "width": a.width,
    "vit": dict(depth=a.vit_depth, width=a.vit_width, pool=a.vit_pool or ("mean" if a.method == "ijepa" else "cls"),
                decoder_depth=a.decoder_depth, decoder_width=a.decoder_width) if a.vit_depth else None,
    "batch": a.batch,
    "seed": a.seed,
    "base_lr": a.lr,
    "optimizer": a.optimizer,
    "lr": lr,
    "final_lr": final_lr,
    "weight_decay": a.weight_decay,
    "lars_eta": a.lars_eta if a.optimizer == "lars" else None,
    "warmup_epochs": a.warmup,
    "train_images": len(train_idx),
    "val_images": len(val_idx),
    "train_seconds": train_seconds,
    "train_images_per_second": step * a.batch / train_seconds,
    "epoch_images_per_second": epoch_rates,
    "epoch_train_seconds": epoch_seconds,
    "epoch_knn_top1": epoch_knn,
    "epoch_loss": epoch_loss,
    "method_seconds": method_seconds,
    "knn_top1": knn_top1,
    "probe_top1": probe_top1,
    "random_knn_top1": random_knn,
    "random_probe_top1": random_probe,
    "raw_pixel_knn_top1": raw_knn,
    "peak_rss_mib_training_main": own,
    "peak_rss_mib_training_one_worker": workers,
    "peak_rss_mib_training": own + a.workers * workers,
    "total_seconds": time.perf_counter() - started,
}
print(json.dumps(summary), flush=True)
if a.out:
    with open(a.out, "w") as f:
        f.write(json.dumps(summary) + "\n")
