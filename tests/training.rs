//! Every method lowers its loss in a few optimiser steps of a tiny convnet on random images.

mod common;

use common::*;
use selfsup::method::{
    AnyMethodConfig, DeepClusterConfig, DinoConfig, Method, MocoConfig, Preset, SwavConfig,
};
use selfsup::step::SelfSupervised;

fn lowers_its_loss(method: AnyMethodConfig, lr: f64) {
    lowers_its_loss_on(method, lr, 1);
}

/// Steps cycle over `batches` batches of random images (MoCo needs other images than the
/// current batch in its queue: keys of the same images would be negatives for themselves).
fn lowers_its_loss_on(method: AnyMethodConfig, lr: f64, batches: u64) {
    let d = device();
    let model = tiny_model(&method, &d);
    // DeepCluster-v2 clusters its (random) memory bank at the start of the epoch.
    let mut model = SelfSupervised {
        method: model.method.start_epoch(0, 7).unwrap(),
        ..model
    };
    let steps = 12;
    let mut stepper = Stepper::sgd(&model, lr, steps, 0.99);
    // The method's own target momentum (MoCo's is constant).
    let ema = tiny_config(method.clone()).ema;
    stepper.ema = selfsup::optim::EmaSchedule::between(ema.tau_base, ema.tau_end, steps).unwrap();
    let pool: Vec<Vec<_>> = (0..batches)
        .map(|b| {
            let images = random::<4>([16, 3, 12, 12], 5 + 10 * b, &d);
            vec![
                images.clone() + random::<4>([16, 3, 12, 12], 6 + 10 * b, &d).mul_scalar(0.1),
                images.flip([3]) + random::<4>([16, 3, 12, 12], 7 + 10 * b, &d).mul_scalar(0.1),
            ]
        })
        .collect();
    let mut losses = Vec::new();
    for step in 0..steps {
        let views = &pool[step % pool.len()];
        let (next, report) = stepper.step(model, views);
        model = next;
        assert!(report.loss.is_finite());
        losses.push(report.loss);
    }
    // With several batches, the first step's loss is left out: MoCo's queue holds random
    // vectors then, which are easier negatives than real keys.
    let first = losses[usize::from(batches > 1)..]
        .iter()
        .take(batches as usize)
        .sum::<f32>()
        / batches as f32;
    let last = losses[steps - batches as usize..].iter().sum::<f32>() / batches as f32;
    assert!(
        last < first,
        "{method:?}: loss did not decrease: {losses:?}"
    );
}

#[test]
fn byol_lowers_its_loss() {
    lowers_its_loss(AnyMethodConfig::byol(Preset::Cifar), 0.1);
}

#[test]
fn simsiam_lowers_its_loss() {
    lowers_its_loss(AnyMethodConfig::simsiam(Preset::Cifar), 0.1);
}

#[test]
fn barlow_twins_lowers_its_loss() {
    lowers_its_loss(AnyMethodConfig::barlow_twins(Preset::Cifar), 0.05);
}

#[test]
fn swav_lowers_its_loss() {
    let config = SwavConfig {
        num_prototypes: 8,
        ..SwavConfig::preset(Preset::Cifar)
    };
    lowers_its_loss(AnyMethodConfig::Swav(config), 0.1);
}

#[test]
fn vicreg_lowers_its_loss() {
    lowers_its_loss(AnyMethodConfig::vicreg(Preset::Cifar), 0.05);
}

#[test]
fn simclr_lowers_its_loss() {
    lowers_its_loss(AnyMethodConfig::simclr(Preset::Cifar), 0.1);
}

#[test]
fn moco_lowers_its_loss() {
    let config = MocoConfig {
        queue_length: 32,
        ..MocoConfig::preset(Preset::Cifar)
    };
    // Four batches: the queue (the last step's 32 keys) never holds the current images.
    lowers_its_loss_on(AnyMethodConfig::Moco(config), 0.1, 4);
}

#[test]
fn dino_lowers_its_loss() {
    let config = DinoConfig {
        out_dim: 256,
        freeze_last_layer_epochs: 0,
        ..DinoConfig::preset(Preset::Cifar)
    };
    lowers_its_loss(AnyMethodConfig::Dino(config), 0.1);
}

#[test]
fn deepcluster_lowers_its_loss() {
    let config = DeepClusterConfig {
        num_prototypes: vec![4, 6],
        ..DeepClusterConfig::preset(Preset::Cifar)
    };
    lowers_its_loss(AnyMethodConfig::DeepCluster(config), 0.1);
}

#[test]
fn lejepa_lowers_its_loss() {
    lowers_its_loss(AnyMethodConfig::lejepa(Preset::Cifar), 0.05);
}
