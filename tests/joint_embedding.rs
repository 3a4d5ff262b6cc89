//! The target branch: no gradient, no optimiser update, moved only by the EMA.

mod common;

use burn::module::Module;
use burn::tensor::Tensor;
use common::*;
use selfsup::energy::Energy;
use selfsup::method::{AnyMethodConfig, Method, Preset, StepContext, TargetViews};

fn two_views(d: &burn::tensor::Device) -> Vec<Tensor<4>> {
    vec![
        random::<4>([8, 3, 8, 8], 21, d),
        random::<4>([8, 3, 8, 8], 22, d),
    ]
}

#[test]
fn target_parameters_get_no_gradient() {
    let d = device();
    let model = tiny_model(&AnyMethodConfig::byol(Preset::Cifar), &d);
    let target = model.embedding.target.as_ref().unwrap();
    assert!(collect(target).trainable.iter().all(|t| !t));
    let views = two_views(&d);
    let embeddings = model
        .embedding
        .embed_views(&views, 2, TargetViews::All)
        .unwrap();
    let stepper = Stepper::sgd(&model, 0.1, 10, 0.99);
    let values_now = stepper.values(&model);
    let context = StepContext {
        progress: stepper.progress(),
        values: &values_now,
        indices: &[],
    };
    let loss = model.method.loss(&embeddings, &context).unwrap();
    let grads = loss.backward();
    let conv = &target.backbone;
    let selfsup::backbone::Backbone::ConvNet(net) = conv else {
        panic!("convnet expected")
    };
    assert!(net.blocks[0].conv.weight.val().grad(&grads).is_none());
    let selfsup::backbone::Backbone::ConvNet(online) = &model.embedding.online.backbone else {
        panic!("convnet expected")
    };
    assert!(online.blocks[0].conv.weight.val().grad(&grads).is_some());
}

#[test]
fn optimiser_leaves_the_target_alone_and_ema_moves_it() {
    let d = device();
    let model = tiny_model(&AnyMethodConfig::byol(Preset::Cifar), &d);
    let views = two_views(&d);

    // tau = 1 for every step: the target must not move at all.
    let mut frozen = Stepper::sgd(&model, 0.5, 10, 1.0);
    let before = collect(&model.embedding.target.as_ref().unwrap().backbone);
    let trainable = collect(&model.embedding.online.backbone).trainable;
    let online_before = collect(&model.embedding.online);
    let (model, report) = frozen.step(model, &views);
    assert_eq!(report.values.ema_momentum, Some(1.0));
    let after = collect(&model.embedding.target.as_ref().unwrap().backbone);
    for (i, trainable) in trainable.iter().enumerate() {
        // Running statistics follow the target's own forward passes; weights must not move.
        if *trainable {
            assert_eq!(
                before.values[i], after.values[i],
                "target weight {i} changed"
            );
        }
    }
    let online_after = collect(&model.embedding.online);
    assert_ne!(
        online_before.values, online_after.values,
        "online did not learn"
    );

    // tau < 1: target <- tau target + (1 - tau) online, for trainable parameters.
    let tau = 0.9;
    let target_before = collect(model.embedding.target.as_ref().unwrap());
    let online = collect(&model.embedding.online.backbone);
    let embedding = model.embedding.update_target(tau).unwrap();
    let target_after = collect(&embedding.target.as_ref().unwrap().backbone);
    let n = online.values.len();
    let mut blended = 0;
    for i in 0..n {
        if !online.trainable[i] {
            // Running statistics are the target's own.
            assert_eq!(target_after.values[i], target_before.values[i]);
            continue;
        }
        blended += 1;
        let expected: Vec<f64> = target_before.values[i]
            .iter()
            .zip(&online.values[i])
            .map(|(t, o)| tau * t + (1.0 - tau) * o)
            .collect();
        assert_close("ema", &target_after.values[i], &expected);
    }
    assert!(blended > 0);
}

#[test]
fn the_target_has_its_own_batchnorm_statistics() {
    let d = device();
    let model = tiny_model(&AnyMethodConfig::byol(Preset::Cifar), &d);
    let target_before = collect(model.embedding.target.as_ref().unwrap());
    // A training-mode forward of the online branch updates its running statistics only.
    let _ = model
        .embedding
        .embed(random::<4>([8, 3, 8, 8], 3, &d))
        .unwrap();
    let target_after = collect(model.embedding.target.as_ref().unwrap());
    assert_eq!(target_before.values, target_after.values);
}

#[test]
fn simsiam_uses_the_online_branch_under_stop_gradient() {
    let d = device();
    let model = tiny_model(&AnyMethodConfig::simsiam(Preset::Cifar), &d);
    assert!(model.embedding.target.is_none());
    assert!(model.embedding.online.predictor.is_some());
}

#[test]
fn energy_scores_views_of_the_same_image_lower() {
    let d = device();
    let model = tiny_model(&AnyMethodConfig::byol(Preset::Cifar), &d)
        .embedding
        .valid();
    let dv = burn::tensor::Device::flex();
    let x = random::<4>([6, 3, 8, 8], 31, &dv);
    let same = model.energy(x.clone(), x.clone(), Energy::Cosine).unwrap();
    assert!(values(&same).iter().all(|e| e.abs() < 1e-5));
    let other = random::<4>([6, 3, 8, 8], 32, &dv);
    let unrelated = model.energy(x, other, Energy::Cosine).unwrap();
    assert!(values(&unrelated).iter().any(|e| *e > 1e-4));
}

#[test]
fn the_target_backbone_is_there_for_methods_with_a_momentum_target_only() {
    use selfsup::model::BackboneBranch;
    let d = device();
    let byol = tiny_model(&AnyMethodConfig::byol(Preset::Cifar), &d);
    let online = byol.embedding.backbone_of(BackboneBranch::Online).unwrap();
    assert!(std::ptr::eq(online, &byol.embedding.online.backbone));
    let target = byol.embedding.backbone_of(BackboneBranch::Target).unwrap();
    let branch = byol.embedding.target.as_ref().unwrap();
    assert!(std::ptr::eq(target, &branch.backbone));
    let simsiam = tiny_model(&AnyMethodConfig::simsiam(Preset::Cifar), &d);
    assert!(
        simsiam
            .embedding
            .backbone_of(BackboneBranch::Target)
            .is_none()
    );
}
