//! Training-step throughput: images per second of a full training step (two views, forward,
//! backward, optimiser, and for BYOL the EMA update) of one method on a ResNet-18 with the
//! CIFAR stem, without the loader (the views are random tensors already on the device).
//!
//! ```text
//! cargo bench --bench train_step
//! SELFSUP_BENCH_WIDTH=64 SELFSUP_BENCH_BATCH=128 cargo bench --bench train_step
//! ```
//!
//! Environment: `SELFSUP_BENCH_DEVICE` (`cpu`, `wgpu`, `vulkan` or `cuda`; default `cpu`; the
//! GPU backends need `--features wgpu` / `vulkan` / `cuda`), `SELFSUP_BENCH_WIDTH` (first-stage
//! channels, default 16),
//! `SELFSUP_BENCH_BATCH` (default 64), `SELFSUP_BENCH_STEPS` (timed steps, default 5; one
//! untimed warm-up step runs first), `SELFSUP_BENCH_CONV` (`fast`: this crate's CPU
//! convolution, batch norm, GELU, layer norm and attention, the default; `flex`: burn's own; `both`: one run each, for
//! before/after), `SELFSUP_BENCH_METHOD` (any built-in method: `byol`, `simsiam`, `barlow`,
//! `swav`, `vicreg`, `simclr`, `moco`, `dino`, `deepcluster`; default `byol`), `SELFSUP_BENCH_HEAD_WIDTH` (the heads' width multiplier, default 1.0: the
//! papers' heads; `benches/cifar10.sh` uses 0.25), `SELFSUP_BENCH_MALLOC` (`default`: leave
//! glibc's allocator settings alone instead of calling `allocator::retain_freed_memory` as
//! `pretrain` does; for before/after), `SELFSUP_BENCH_OPTIMIZER` (`sgd`: momentum 0.9, weight
//! decay 5e-4, lr 0.06, the default; `lars`: VICReg's CIFAR LARS at lr 0.3; `lars-tensor-ops`:
//! the same with the update composed of tensor operations instead of the fused CPU step),
//! `SELFSUP_BENCH_BACKBONE` (`resnet18`, the default, or `vit-tiny`: ViT-Tiny with 4-pixel
//! patches, `vit-N`: its first N blocks; with a ViT, `mae` and `ijepa` are benchmarkable and
//! draw their masks each step, and the optimiser is AdamW, weight decay 0.05, lr 5e-4),
//! `SELFSUP_BENCH_CONV_MATMUL` (`1`: the convolutions the CPU kernels do not take, so every one
//! on a GPU, as one matrix product over shifted views, `selfsup::conv::set_conv_by_matmul`).
//! Prints the median and the spread of images/s.

use std::time::Instant;

use burn::tensor::Distribution;
use selfsup::method::{Progress, ScheduleValues, StepContext};
use selfsup::optim::{GroupedOptimizer, ParamGroups};
use selfsup::prelude::*;
use selfsup::step::train_step_masked;
use selfsup::train::build_model;

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
    // As `pretrain` does on the CPU (`SELFSUP_BENCH_MALLOC=default` keeps glibc's defaults).
    if selfsup::device::is_cpu(&device)
        && std::env::var("SELFSUP_BENCH_MALLOC").as_deref() != Ok("default")
    {
        selfsup::kernels::allocator::retain_freed_memory();
    }
    let modes: &[(&str, bool)] = match std::env::var("SELFSUP_BENCH_CONV").as_deref() {
        Ok("flex") => &[("burn flex kernels", false)],
        Ok("both") => &[
            ("burn flex kernels", false),
            ("selfsup kernels: conv, batch norm, transformer ops", true),
        ],
        _ => &[("selfsup kernels: conv, batch norm, transformer ops", true)],
    };
    let name = std::env::var("SELFSUP_BENCH_METHOD").unwrap_or_else(|_| "byol".into());
    let name = if name == "barlow" {
        "barlow-twins"
    } else {
        &name
    };
    let method = AnyMethodConfig::preset(name, Preset::Cifar)?;
    let head_width = std::env::var("SELFSUP_BENCH_HEAD_WIDTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let shape = Shape {
        width,
        batch,
        head_width,
    };
    // On GPUs: convolutions as one matrix product over shifted views instead of burn's kernels.
    let by_matmul = std::env::var("SELFSUP_BENCH_CONV_MATMUL").as_deref() == Ok("1");
    selfsup::conv::set_conv_by_matmul(by_matmul);
    for &(label, fast) in modes {
        let matmul_label = format!("{label}; other convolutions as matrix products");
        let conv_label = if by_matmul { &matmul_label } else { label };
        selfsup::conv::set_fast_conv(fast);
        selfsup::batch_norm::set_fast_batch_norm(fast);
        selfsup::transformer_ops::set_fast_transformer_ops(fast);
        measure(&device, &device_name, conv_label, &method, shape, steps)?;
    }
    Ok(())
}

/// The backbone of `SELFSUP_BENCH_BACKBONE`.
fn bench_backbone(width: usize) -> selfsup::Result<BackboneConfig> {
    let name = std::env::var("SELFSUP_BENCH_BACKBONE").unwrap_or_else(|_| "resnet18".into());
    if name == "resnet18" {
        let resnet = ResNetConfig::resnet18()
            .with_stem(Stem::Cifar)
            .with_width(width);
        return Ok(BackboneConfig::ResNet(resnet));
    }
    let depth = match name.strip_prefix("vit-") {
        Some("tiny") => Some(12),
        Some(n) => n.parse().ok(),
        None => None,
    };
    match depth {
        Some(depth) => {
            let mut vit = selfsup::backbone::VitConfig::cifar_tiny();
            vit.num_layers = depth;
            Ok(BackboneConfig::Vit(vit))
        }
        None => Err(selfsup::Error::invalid_config(
            "SELFSUP_BENCH_BACKBONE",
            name,
            "resnet18, vit-tiny or vit-N (ViT-Tiny's first N blocks)",
        )),
    }
}

/// The network and batch being timed.
#[derive(Clone, Copy)]
struct Shape {
    width: usize,
    batch: usize,
    head_width: f64,
}

fn measure(
    device: &Device,
    device_name: &str,
    conv_label: &str,
    method: &AnyMethodConfig,
    shape: Shape,
    steps: usize,
) -> selfsup::Result<()> {
    let Shape {
        width,
        batch,
        head_width,
    } = shape;
    let device = device.clone();
    device.seed(0);
    let backbone_config = bench_backbone(width)?;
    let vit = matches!(backbone_config, BackboneConfig::Vit(_));
    // The papers' heads scaled by `head_width` (BYOL: projector and predictor 4096 hidden,
    // 256 out at 1.0).
    let mut config = PretrainConfig::cifar(method.clone(), backbone_config.clone(), 1);
    config.head_width = head_width;
    // A bank big enough for every prototype count (DeepCluster-v2: 3 x 1,000 at CIFAR scale).
    let bank = batch.max(3000);
    let mut model = build_model(&config, backbone_config.init(&device)?, bank, &device)?;
    model.method = model.method.start_epoch(0, 0)?;
    let (optimizer, lr) = match std::env::var("SELFSUP_BENCH_OPTIMIZER").as_deref() {
        Err(_) if vit => (OptimizerConfig::adamw(0.05), 5e-4),
        Ok("sgd") | Err(_) => (OptimizerConfig::cifar_sgd(), 0.06),
        Ok(lars @ ("lars" | "lars-tensor-ops")) => {
            selfsup::optim::lars::set_fused_cpu_step(lars == "lars");
            (OptimizerConfig::lars(0.02, 1e-4), 0.3)
        }
        Ok(other) => {
            return Err(selfsup::Error::invalid_config(
                "SELFSUP_BENCH_OPTIMIZER",
                other,
                "sgd, lars or lars-tensor-ops",
            ));
        }
    };
    let weight_decay = optimizer.weight_decay;
    let mut optimizer =
        GroupedOptimizer::new(&optimizer, &ParamGroups::rank_one_excluded(&model), lr)?;
    let ema = EmaSchedule::new(0.99, steps + 1)?;
    let indices: Vec<usize> = (0..batch).collect();
    let views = [
        Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
        Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
    ];
    let masking = config.views.masking.clone();
    let view_count = if masking.is_some() { 1 } else { 2 };
    let mut rates = Vec::with_capacity(steps);
    for step in 0..=steps {
        let start = Instant::now();
        let progress = Progress {
            step,
            epoch: 0,
            steps_per_epoch: steps + 1,
            epochs: 1,
        };
        let tau = Some(ema.tau(step));
        let values = ScheduleValues::at(&progress, &model.method, lr, weight_decay, tau);
        let context = StepContext {
            progress,
            values: &values,
            indices: &indices,
        };
        // Masks are drawn as the loader draws them, once per batch (inside the timing).
        let masks = masking.as_ref().map(|m| {
            m.draw(32, batch, [0, 0, step as u64])
                .to_device(batch, &device)
        });
        let views = &views[..view_count];
        let (next, report) = train_step_masked(
            model,
            views,
            view_count,
            masks.as_ref(),
            &context,
            &mut optimizer,
        )?;
        model = next;
        let seconds = start.elapsed().as_secs_f64();
        if step > 0 {
            rates.push(batch as f64 / seconds);
        }
        eprintln!("step {step}: loss {:.4}, {:.2} s", report.loss, seconds);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let network = match &backbone_config {
        BackboneConfig::Vit(v) => format!(
            "ViT patch {} depth {} width {}",
            v.patch_size, v.num_layers, v.hidden_dim
        ),
        _ => format!("ResNet-18 CIFAR stem width {width}"),
    };
    println!(
        "{} train step, {network}, heads x{head_width}, batch {batch}, \
         32x32, device {device_name} ({} CPU threads, {conv_label}): median {median:.1} images/s (min {:.1}, max {:.1}) over \
         {steps} steps",
        method.name(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}
