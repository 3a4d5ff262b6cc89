"""Side-by-side reference for `cargo bench --bench augment`: the same BYOL view pair with
lightly's transforms (torchvision + PIL) and with a plain torchvision Compose, on one core, and
PyTorch's DataLoader over the same JPEG folder.

    ~/.cache/selfsup-ref/bin/python benches/reference/augment_torchvision.py [CIFAR_TRAIN_DIR]

Settings match selfsup's `ViewTransform::byol`: random resized crop (0.08, 1), flip 0.5, colour
jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2, blur p 1.0 / 0.1 (sigma 0.1-2; none at
32 px), solarise p 0 / 0.2, ImageNet normalisation.
"""
import os
import statistics
import sys
import time

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

torch.set_num_threads(1)
root = sys.argv[1] if len(sys.argv) > 1 else "target/data/cifar10/train"
repeats = int(os.environ.get("SELFSUP_BENCH_REPEATS", "5"))

classes = sorted(os.listdir(root))
images = []
for c in classes:
    files = sorted(os.listdir(os.path.join(root, c)))[:200]
    for f in files:
        images.append(Image.open(os.path.join(root, c, f)).convert("RGB"))
large = [im.resize((256, 256), Image.BILINEAR) for im in images]


def lightly_pair(size, blur):
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

    v1 = BYOLView1Transform(input_size=size, gaussian_blur=1.0 if blur else 0.0)
    v2 = BYOLView2Transform(input_size=size, gaussian_blur=0.1 if blur else 0.0)
    return v1, v2


def torchvision_pair(size, blur):
    def view(blur_p, solarize_p):
        steps = [
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ]
        if blur and blur_p > 0:
            steps.append(T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=blur_p))
        steps += [
            T.RandomSolarize(128, p=solarize_p),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
        return T.Compose(steps)

    return view(1.0, 0.0), view(0.1, 0.2)


def views_per_second(pair, sources, n):
    v1, v2 = pair
    rates = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        for im in sources[:n]:
            v1(im)
            v2(im)
        rate = 2 * n / (time.perf_counter() - start)
        if r > 0:
            rates.append(rate)
    return statistics.median(rates), min(rates), max(rates)


print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, 1 thread")
for name, make in [("lightly BYOLTransform", lightly_pair), ("torchvision Compose", torchvision_pair)]:
    for label, size, blur, sources, n in [
        ("BYOL pair 32x32 (no blur)", 32, False, images, len(images)),
        ("BYOL pair 224x224 (blur)", 224, True, large, 200),
    ]:
        m, lo, hi = views_per_second(make(size, blur), sources, n)
        print(f"{name}, {label}: median {m:.0f} views/s on one core (min {lo:.0f}, max {hi:.0f}; {n} images x 2 views)")

# DataLoader over the JPEG folder, with decoding.
from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

transform = BYOLTransform(
    view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
    view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0),
)
dataset = torchvision.datasets.ImageFolder(root, transform=transform)
rates = []
for r in range(min(repeats, 3)):
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=True, num_workers=2, drop_last=True)
    start = time.perf_counter()
    count = 0
    for i, (views, labels) in enumerate(loader):
        count += views[0].shape[0]
        if i + 1 == 40:
            break
    rates.append(count / (time.perf_counter() - start))
print(
    f"DataLoader(ImageFolder, lightly BYOLTransform 32px), batch 256, 2 workers: median {statistics.median(rates):.0f} images/s "
    f"(min {min(rates):.0f}, max {max(rates):.0f}; 40 batches, worker start-up included)"
)
