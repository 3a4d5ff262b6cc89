//! Trains every objective for a few dozen steps on synthetic images and prints the loss and the
//! collapse statistics: a two-minute tour of the crate on the CPU.
//!
//! ```text
//! cargo run --release --example objectives
//! ```
//!
//! The images are smooth random patterns (random 4x4 colour grids upsampled to 16x16); the two
//! views of an image are a noisy copy and a mirrored noisy copy. Real data and the paper
//! augmentations come with the data pipeline.

use burn::optim::SgdConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, Distribution, Tensor};
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::energy::Energy;
use selfsup::objective::{ObjectiveConfig, SwavConfig};
use selfsup::optim::{EmaSchedule, WarmupCosine};
use selfsup::prelude::*;

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

fn main() -> selfsup::Result<()> {
    let device = Device::flex().autodiff();
    device.seed(0);
    let methods = [
        ObjectiveConfig::Byol,
        ObjectiveConfig::SimSiam,
        ObjectiveConfig::barlow_twins(),
        ObjectiveConfig::Swav(SwavConfig::new().with_num_prototypes(32)),
        ObjectiveConfig::vicreg(),
        ObjectiveConfig::ntxent(),
    ];
    let held_out = images(BATCH, &device);
    println!(
        "{:<13} {:>10} {:>10} {:>13} {:>11} {:>12}",
        "method", "loss[0]", "loss[end]", "embed. std", "1/sqrt(d)", "energy gap"
    );
    for method in methods {
        let backbone =
            BackboneConfig::ConvNet(ConvNetConfig::new().with_width(16)).init(&device)?;
        let arch = JointEmbeddingConfig::for_objective(&method, backbone.feature_dim(), 1.0 / 16.0);
        let dim = arch.projector.output_dim();
        let model = SelfSupervised::new(arch.init(backbone)?, method.init(dim, &device)?)?;
        let lr = WarmupCosine::new(0.1, 5, STEPS)?;
        let mut state = StepState {
            optimizer: SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
                .init(),
            objective: method.initial_state(2)?,
            ema: Some(EmaSchedule::new(0.99, STEPS)?),
        };
        let mut model = model;
        let mut first = None;
        let mut last = None;
        for step in 0..STEPS {
            let batch = images(BATCH, &device);
            let views = [view(&batch, false), view(&batch, true)];
            let (next, report) = train_step(model, &views, 2, lr.lr(step), &mut state)?;
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
            "{:<13} {:>10.4} {:>10.4} {:>13.4} {:>11.4} {:>12.4}",
            model.objective.name(),
            first.unwrap_or(f32::NAN),
            last.loss,
            last.collapse.embedding_std,
            1.0 / (dim as f32).sqrt(),
            gap
        );
    }
    Ok(())
}
