"""Side-by-side reference for `cargo bench --bench photos`: decode a photograph with PIL
(torchvision's `pil_loader`: `Image.open(...).convert("RGB")`) and cut lightly's BYOL pair at
224 x 224 (and the same pair as a plain torchvision Compose), on one core.

    ~/.cache/selfsup-ref/bin/python benches/reference/photos_torchvision.py [PHOTOS_DIR]

The photos are read into memory once; each round decodes every photo SELFSUP_PHOTO_REPEAT times
(default 30) from those bytes, as the Rust bench does. Prints the median of
SELFSUP_BENCH_REPEATS rounds (default 5) of: decode only, and decode + pair, per pipeline, in
images per wall-clock second and per CPU second of the process (the stable per-core figure on
a shared machine).
"""
import io
import os
import statistics
import sys
import time

import PIL
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

torch.set_num_threads(1)
root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/photos"
repeats = int(os.environ.get("SELFSUP_BENCH_REPEATS", "5"))
per_photo = int(os.environ.get("SELFSUP_PHOTO_REPEAT", "30"))
rounds_only = os.environ.get("SELFSUP_BENCH_ROUNDS_ONLY") == "1"

photos = [open(os.path.join(root, f), "rb").read()
          for f in sorted(os.listdir(root)) if f.endswith((".jpg", ".jpeg"))]


def pil_loader(data):
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def lightly_pair():
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

    return BYOLView1Transform(input_size=224), BYOLView2Transform(input_size=224)


def torchvision_pair():
    def view(blur_p, solarize_p):
        return T.Compose([
            T.RandomResizedCrop(224, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=blur_p),
            T.RandomSolarize(128, p=solarize_p),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])

    return view(1.0, 0.0), view(0.1, 0.2)


def images_per_second(pair):
    count = per_photo * len(photos)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        im = pil_loader(photos[i % len(photos)])
        if pair is not None:
            pair[0](im)
            pair[1](im)
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


print(f"{len(photos)} photos from {root}; torch {torch.__version__}, torchvision "
      f"{torchvision.__version__}, Pillow {PIL.__version__}, 1 thread")
pipelines = [("PIL decode only", None)]
try:
    pipelines.append(("PIL decode + lightly BYOL 224 pair", lightly_pair()))
except ImportError:
    # The GPU machine's image has torchvision but not lightly.
    print("lightly is not installed: its pipeline is skipped")
pipelines.append(("PIL decode + torchvision Compose BYOL 224 pair", torchvision_pair()))
for name, pair in pipelines:
    wall, cpu = [], []
    for r in range(repeats + 1):
        w, c = images_per_second(pair)
        if r > 0:
            if rounds_only:
                print(f"round {r}: {name}: {w:.1f} images/s, {c:.1f} images per CPU second")
            wall.append(w)
            cpu.append(c)
    print(f"{name}: median {statistics.median(wall):.1f} images/s, "
          f"{statistics.median(cpu):.1f} images per CPU second")
