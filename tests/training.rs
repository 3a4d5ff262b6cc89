//! Every objective lowers its loss in a few optimiser steps of a tiny convnet on random images.

mod common;

use common::*;
use selfsup::objective::{ObjectiveConfig, SwavConfig};
use selfsup::step::train_step;

fn lowers_its_loss(objective: ObjectiveConfig, lr: f64) {
    let d = device();
    let mut model = tiny_model(&objective, &d);
    let steps = 12;
    let mut state = sgd_state(&objective, steps, 0.99);
    let images = random::<4>([16, 3, 12, 12], 5, &d);
    let views = vec![
        images.clone() + random::<4>([16, 3, 12, 12], 6, &d).mul_scalar(0.1),
        images.flip([3]) + random::<4>([16, 3, 12, 12], 7, &d).mul_scalar(0.1),
    ];
    let mut losses = Vec::new();
    for _ in 0..steps {
        let (next, report) = train_step(model, &views, 2, lr, &mut state).unwrap();
        model = next;
        assert!(report.loss.is_finite());
        losses.push(report.loss);
    }
    let first = losses[0];
    let last = (losses[steps - 1] + losses[steps - 2]) / 2.0;
    assert!(
        last < first,
        "{objective:?}: loss did not decrease: {losses:?}"
    );
}

#[test]
fn byol_lowers_its_loss() {
    lowers_its_loss(ObjectiveConfig::Byol, 0.1);
}

#[test]
fn simsiam_lowers_its_loss() {
    lowers_its_loss(ObjectiveConfig::SimSiam, 0.1);
}

#[test]
fn barlow_twins_lowers_its_loss() {
    lowers_its_loss(ObjectiveConfig::barlow_twins(), 0.05);
}

#[test]
fn swav_lowers_its_loss() {
    lowers_its_loss(
        ObjectiveConfig::Swav(SwavConfig::new().with_num_prototypes(8)),
        0.1,
    );
}

#[test]
fn vicreg_lowers_its_loss() {
    lowers_its_loss(ObjectiveConfig::vicreg(), 0.05);
}

#[test]
fn simclr_lowers_its_loss() {
    lowers_its_loss(ObjectiveConfig::ntxent(), 0.1);
}
