//! Training-step throughput: images per second of a full BYOL step (two views, forward,
//! backward, optimiser, EMA update) on a ResNet-18 with the CIFAR stem.
//!
//! ```text
//! cargo bench --bench train_step
//! SELFSUP_BENCH_WIDTH=64 SELFSUP_BENCH_BATCH=128 cargo bench --bench train_step
//! ```
//!
//! Environment: `SELFSUP_BENCH_DEVICE` (`cpu`, `wgpu` or `cuda`; default `cpu`; the GPU
//! backends need `--features wgpu` / `--features cuda`), `SELFSUP_BENCH_WIDTH` (first-stage
//! channels, default 16),
//! `SELFSUP_BENCH_BATCH` (default 64), `SELFSUP_BENCH_STEPS` (timed steps, default 5; one
//! untimed warm-up step runs first), `SELFSUP_BENCH_CONV` (`fast`: this crate's CPU
//! convolution and batch norm, the default; `flex`: burn's own; `both`: one run each, for
//! before/after).
//! Prints the median and the spread of images/s.

use std::time::Instant;

use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::Distribution;
use selfsup::prelude::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> selfsup::Result<()> {
    let width = env("SELFSUP_BENCH_WIDTH", 16);
    let batch = env("SELFSUP_BENCH_BATCH", 64);
    let steps = env("SELFSUP_BENCH_STEPS", 5);
    let device_name = std::env::var("SELFSUP_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = selfsup::device::select_device(device_name.parse()?)?.autodiff();
    let modes: &[(&str, bool)] = match std::env::var("SELFSUP_BENCH_CONV").as_deref() {
        Ok("flex") => &[("burn flex conv + batch norm", false)],
        Ok("both") => &[
            ("burn flex conv + batch norm", false),
            ("selfsup fast conv + batch norm", true),
        ],
        _ => &[("selfsup fast conv + batch norm", true)],
    };
    for &(conv_label, fast) in modes {
        selfsup::conv::set_fast_conv(fast);
        selfsup::batch_norm::set_fast_batch_norm(fast);
        measure(&device, &device_name, conv_label, width, batch, steps)?;
    }
    Ok(())
}

fn measure(
    device: &Device,
    device_name: &str,
    conv_label: &str,
    width: usize,
    batch: usize,
    steps: usize,
) -> selfsup::Result<()> {
    let device = device.clone();
    device.seed(0);
    let method = ObjectiveConfig::Byol;
    let backbone = BackboneConfig::ResNet(
        ResNetConfig::resnet18()
            .with_stem(Stem::Cifar)
            .with_width(width),
    )
    .init(&device)?;
    // lightly's BYOL heads: projector and predictor 4096 hidden, 256 out.
    let arch = JointEmbeddingConfig::for_objective(&method, backbone.feature_dim(), 1.0);
    let mut model = SelfSupervised::new(arch.init(backbone)?, method.init(256, &device)?)?;
    let mut state = StepState {
        optimizer: SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
            .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
            .init(),
        objective: method.initial_state(2)?,
        ema: Some(EmaSchedule::new(0.99, steps + 1)?),
    };
    let views = [
        Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
        Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
    ];
    let mut rates = Vec::with_capacity(steps);
    for step in 0..=steps {
        let start = Instant::now();
        let (next, report) = train_step(model, &views, 2, 0.06, &mut state)?;
        model = next;
        let seconds = start.elapsed().as_secs_f64();
        if step > 0 {
            rates.push(batch as f64 / seconds);
        }
        eprintln!("step {step}: loss {:.4}, {:.2} s", report.loss, seconds);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "BYOL train step, ResNet-18 CIFAR stem width {width}, batch {batch}, 32x32, device \
         {device_name} ({} CPU threads, {conv_label}): median {median:.1} images/s (min {:.1}, max {:.1}) over \
         {steps} steps",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}
