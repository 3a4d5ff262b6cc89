//! Trains every method for a few dozen steps on synthetic images and prints the loss and the
//! collapse statistics: a two-minute tour of the crate on the CPU.
//!
//! ```text
//! cargo run --release --example objectives
//! ```
//!
//! The images are smooth random patterns (random 4x4 colour grids upsampled to 16x16); the two
//! views of an image are a noisy copy and a mirrored noisy copy. Real data and the paper
//! augmentations come with the data pipeline.

use burn::tensor::{Device, Distribution, Tensor};
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::energy::Energy;
use selfsup::method::{
    DeepClusterConfig, MocoConfig, Progress, ScheduleValues, StepContext, SwavConfig,
};
use selfsup::optim::{EmaSchedule, GroupedOptimizer, ParamGroups, WarmupCosine};
use selfsup::prelude::*;
use selfsup::train::build_model;

const STEPS: usize = 40;
const BATCH: usize = 64;
const SIZE: usize = 16;

/// Smooth random images `[n, 3, SIZE, SIZE]`.
fn images(n: usize, device: &Device) -> Tensor<4> {
    let grid = Tensor::<4>::random([n, 3, 4, 4], Distribution::Uniform(0.0, 1.0), device);
    let factor = SIZE / 4;
    grid.reshape([n, 3, 4, 1, 4, 1])
        .repeat_dim(3, factor)
        .repeat_dim(5, factor)
        .reshape([n, 3, SIZE, SIZE])
}

fn view(images: &Tensor<4>, mirror: bool) -> Tensor<4> {
    let noise = images.random_like(Distribution::Normal(0.0, 0.1));
    let x = images.clone() + noise;
    if mirror { x.flip([3]) } else { x }
}

/// Every built-in joint-embedding method, with prototype counts and a queue that fit 64-image
/// batches (the masked-image methods, MAE and I-JEPA, need a ViT and masks: their examples).
fn methods() -> Vec<AnyMethodConfig> {
    AnyMethodConfig::NAMES
        .iter()
        .filter(|name| !matches!(**name, "mae" | "ijepa"))
        .map(|name| match AnyMethodConfig::preset(name, Preset::Cifar) {
            Ok(AnyMethodConfig::Swav(c)) => AnyMethodConfig::Swav(SwavConfig {
                num_prototypes: 32,
                ..c
            }),
            Ok(AnyMethodConfig::Moco(c)) => AnyMethodConfig::Moco(MocoConfig {
                queue_length: 512,
                ..c
            }),
            Ok(AnyMethodConfig::DeepCluster(c)) => {
                AnyMethodConfig::DeepCluster(DeepClusterConfig {
                    num_prototypes: vec![16; 3],
                    ..c
                })
            }
            Ok(other) => other,
            Err(e) => panic!("{e}"),
        })
        .collect()
}

fn main() -> selfsup::Result<()> {
    let device = Device::flex().autodiff();
    device.seed(0);
    let held_out = images(BATCH, &device);
    println!(
        "{:<15} {:>10} {:>10} {:>13} {:>11} {:>12}",
        "method", "loss[0]", "loss[end]", "embed. std", "1/sqrt(d)", "energy gap"
    );
    for method in methods() {
        let backbone_config = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(16));
        let mut config = PretrainConfig::cifar(method, backbone_config.clone(), 1);
        config.head_width = 1.0 / 16.0;
        let backbone = backbone_config.init(&device)?;
        let mut model = build_model(&config, backbone, BATCH, &device)?;
        // DeepCluster-v2 clusters its memory bank (random here) before the epoch.
        model.method = model.method.start_epoch(0, 0)?;
        let dim = model
            .embedding
            .online
            .projector
            .output_dim()
            .unwrap_or_else(|| model.embedding.online.backbone.feature_dim());
        let lr = WarmupCosine::new(0.1, 5, STEPS)?;
        let ema = EmaSchedule::new(0.99, STEPS)?;
        let groups = ParamGroups::rank_one_excluded(&model);
        let mut optimizer = GroupedOptimizer::new(&OptimizerConfig::sgd(0.0), &groups, 0.1)?;
        let mut first = None;
        let mut last = None;
        let indices: Vec<usize> = (0..BATCH).collect();
        for step in 0..STEPS {
            let batch = images(BATCH, &device);
            let views = [view(&batch, false), view(&batch, true)];
            let progress = Progress {
                step,
                epoch: 0,
                steps_per_epoch: STEPS,
                epochs: 1,
            };
            let tau = Some(ema.tau(step));
            let values = ScheduleValues::at(&progress, &model.method, lr.lr(step), 0.0, tau);
            let context = StepContext {
                progress,
                values: &values,
                indices: &indices,
            };
            let (next, report) = train_step(model, &views, 2, &context, &mut optimizer)?;
            model = next;
            first.get_or_insert(report.loss);
            last = Some(report);
        }
        let last = last.expect("at least one step");
        // Energy gap on unseen images: views of one image against unrelated images.
        let encoder = model.embedding.valid();
        let a = encoder.embed(view(&held_out, false).without_autodiff())?;
        let b = encoder.embed(view(&held_out, true).without_autodiff())?;
        let gap = Energy::Cosine.energy_gap(a, b)?.into_scalar::<f32>();
        println!(
            "{:<15} {:>10.4} {:>10.4} {:>13.4} {:>11.4} {:>12.4}",
            model.method.name(),
            first.unwrap_or(f32::NAN),
            last.loss,
            last.collapse.embedding_std,
            1.0 / (dim as f32).sqrt(),
            gap
        );
    }
    Ok(())
}
