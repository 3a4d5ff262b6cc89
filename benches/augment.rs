//! Augmentation and loader throughput.
//!
//! ```text
//! mkdir -p target/data && tar -xJf ../shared/data/cifar10-train.tar.xz -C target/data
//! cargo bench --bench augment
//! ~/.cache/selfsup-ref/bin/python benches/reference/augment_torchvision.py   # side by side
//! ```
//!
//! 1. Views per second on one core for a BYOL view pair (lightly's `BYOLView1/2Transform`
//!    settings) at 32 x 32 without blur (lightly's CIFAR-10 recipe) and at 224 x 224 with the
//!    paper's blur, on decoded images held in memory: 2,000 CIFAR-10 training JPEGs, and the
//!    same images resized to 256 x 256 (bilinear) as sources for the 224-pixel views.
//! 2. The loader's images per second from the JPEG folder, with decoding, batch 256, two
//!    worker threads, BYOL CIFAR views, to host buffers and to tensors.
//!
//! Environment: `SELFSUP_CIFAR_DIR` (default `target/data/cifar10/train`), `SELFSUP_BENCH_REPEATS`
//! (default 5). Prints the median and the spread.

use std::sync::Arc;
use std::time::Instant;

use selfsup::augment::{Scale, ViewTransform};
use selfsup::data::{ImageDataset, ImageFolder, LoaderConfig, ViewLoader};
use selfsup::prelude::*;

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> selfsup::Result<()> {
    let dir =
        std::env::var("SELFSUP_CIFAR_DIR").unwrap_or_else(|_| "target/data/cifar10/train".into());
    let repeats: usize = std::env::var("SELFSUP_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let folder = ImageFolder::open(&dir)?;
    // The first 200 images of each class, decoded once.
    let mut images = Vec::new();
    for class in 0..folder.classes().len() {
        let first = (0..folder.len())
            .find(|&i| folder.label(i) == Some(class))
            .unwrap_or(0);
        for i in first..first + 200 {
            images.push(folder.image(i)?);
        }
    }
    let large: Vec<_> = images
        .iter()
        .map(|im| {
            Arc::new(image::imageops::resize(
                &**im,
                256,
                256,
                image::imageops::FilterType::Triangle,
            ))
        })
        .collect();

    for (name, transform, sources) in [
        (
            "BYOL pair 32x32 (no blur)",
            ViewTransform::byol(Scale::Cifar),
            &images,
        ),
        (
            "BYOL pair 224x224 (blur)",
            ViewTransform::byol(Scale::Full(224)),
            &large,
        ),
    ] {
        let sizes = transform.view_sizes();
        let mut a = vec![0.0f32; 3 * sizes[0] * sizes[0]];
        let mut b = vec![0.0f32; 3 * sizes[1] * sizes[1]];
        let n = if sizes[0] > 100 { 200 } else { sources.len() };
        let mut rates = Vec::new();
        for r in 0..=repeats {
            let start = Instant::now();
            for (i, image) in sources.iter().take(n).enumerate() {
                transform.apply(image, [r as u64, 0, i as u64], &mut [&mut a, &mut b])?;
            }
            let views = 2.0 * n as f64 / start.elapsed().as_secs_f64();
            if r > 0 {
                rates.push(views);
            }
        }
        let (m, lo, hi) = median(rates);
        println!(
            "{name}: median {m:.0} views/s on one core (min {lo:.0}, max {hi:.0}; {n} images x 2 views)"
        );
    }

    // The loader, from JPEG files, with decoding.
    let device = Device::flex();
    let dataset: Arc<dyn ImageDataset> = Arc::new(folder);
    let config = LoaderConfig {
        batch_size: 256,
        shuffle: true,
        seed: 0,
        drop_last: true,
        workers: 2,
        prefetch: 0,
    };
    let loader = ViewLoader::new(dataset, ViewTransform::byol(Scale::Cifar), config, &device)?;
    let batches = 40;
    for to_tensor in [false, true] {
        let mut rates = Vec::new();
        for r in 0..repeats.min(3) {
            let start = Instant::now();
            let mut epoch = loader.epoch(r as u64);
            let mut count = 0;
            for _ in 0..batches {
                let host = epoch.next_host().expect("enough batches")?;
                count += host.len();
                if to_tensor {
                    let batch = host.to_device(&device);
                    std::hint::black_box(&batch.views);
                }
            }
            rates.push(count as f64 / start.elapsed().as_secs_f64());
        }
        let (m, lo, hi) = median(rates);
        println!(
            "loader, {dir}, BYOL CIFAR pair, batch 256, 2 workers, {}: median {m:.0} images/s (min {lo:.0}, max {hi:.0}; {batches} batches)",
            if to_tensor {
                "to tensors"
            } else {
                "host buffers"
            }
        );
    }
    Ok(())
}
