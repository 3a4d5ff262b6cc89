//! SwAV specifics: unit-norm prototypes, frozen prototypes, the queue of past embeddings.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::method::{
    AnyMethod, AnyMethodConfig, EmbeddingQueue, Method, Preset, StepContext, SwavConfig,
    TargetViews,
};
use selfsup::prelude::Backbone;
use selfsup::step::SelfSupervised;

fn prototypes(method: &AnyMethod) -> Tensor<2> {
    match method {
        AnyMethod::Swav(s) => s.prototypes.weight.val(),
        _ => panic!("SwAV expected"),
    }
}

fn row_norms(w: &Tensor<2>) -> Vec<f64> {
    values(&w.clone().square().sum_dim(1).sqrt())
}

fn swav(num_prototypes: usize, freeze: usize, queue: usize) -> AnyMethodConfig {
    AnyMethodConfig::Swav(SwavConfig {
        num_prototypes,
        freeze_prototypes_steps: freeze,
        queue_length: queue,
        ..SwavConfig::preset(Preset::Cifar)
    })
}

#[test]
fn prototypes_are_frozen_then_learn_and_stay_unit_norm() {
    let d = device();
    let mut model = tiny_model(&swav(6, 2, 0), &d);
    let mut stepper = Stepper::sgd(&model, 0.5, 10, 0.99);
    let views = vec![
        random::<4>([8, 3, 8, 8], 1, &d),
        random::<4>([8, 3, 8, 8], 2, &d),
    ];
    let initial = values(&prototypes(&model.method));
    assert!(
        row_norms(&prototypes(&model.method))
            .iter()
            .all(|n| (n - 1.0).abs() < 1e-5)
    );
    for _ in 0..2 {
        model = stepper.step(model, &views).0;
    }
    // Frozen: the optimiser did not touch them (re-normalising unit rows changes nothing).
    assert_close(
        "frozen prototypes",
        &values(&prototypes(&model.method)),
        &initial,
    );
    model = stepper.step(model, &views).0;
    let learned = values(&prototypes(&model.method));
    assert!(
        learned
            .iter()
            .zip(&initial)
            .any(|(a, b)| (a - b).abs() > 1e-6),
        "prototypes did not learn after the frozen steps"
    );
    // Normalised before every use.
    let values_now = stepper.values(&model);
    let context = StepContext {
        progress: stepper.progress(),
        values: &values_now,
        indices: &[],
    };
    let method = model.method.before_step(&context).unwrap();
    assert!(
        row_norms(&prototypes(&method))
            .iter()
            .all(|n| (n - 1.0).abs() < 1e-5)
    );
}

#[test]
fn queue_keeps_the_newest_embeddings() {
    let d = device();
    let queue = EmbeddingQueue::empty(2, 5, 4, &d).unwrap();
    assert!(!queue.is_full());
    let batch = |seed| random::<2>([3, 4], seed, &d);
    let (a0, a1, b0, b1) = (batch(1), batch(2), batch(3), batch(4));
    let queue = queue.push(&[a0.clone(), a1]).unwrap();
    assert_eq!(queue.filled(), 3);
    let queue = queue.push(&[b0.clone(), b1]).unwrap();
    assert!(queue.is_full());
    // Newest first, oldest dropped beyond capacity.
    let expected = Tensor::cat(vec![b0, a0.narrow(0, 0, 2)], 0);
    assert_close(
        "queue slot 0",
        &values(&queue.slot(0).unwrap()),
        &values(&expected),
    );
    assert!(queue.slot(2).is_err());
    assert!(
        queue.clone().push(&[batch(5)]).is_err(),
        "one batch per slot"
    );
    assert!(
        queue
            .push(&[random::<2>([3, 5], 6, &d), random::<2>([3, 5], 7, &d)])
            .is_err(),
        "dimension"
    );
    assert!(EmbeddingQueue::empty(0, 5, 4, &d).is_err());
    // MoCo's queue starts full of unit vectors.
    let moco = EmbeddingQueue::random_unit(1, 7, 4, &d).unwrap();
    assert!(moco.is_full());
    assert!(
        row_norms(&moco.slot(0).unwrap())
            .iter()
            .all(|n| (n - 1.0).abs() < 1e-5)
    );
}

fn loss(model: &SelfSupervised<Backbone>, views: &[Tensor<4>], stepper: &Stepper) -> f64 {
    let embeddings = model
        .embedding
        .embed_views(views, 2, TargetViews::All)
        .unwrap();
    let values_now = stepper.values(model);
    let context = StepContext {
        progress: stepper.progress(),
        values: &values_now,
        indices: &[],
    };
    values(&model.method.loss(&embeddings, &context).unwrap())[0]
}

#[test]
fn the_queue_is_used_once_full() {
    let d = device();
    let model = tiny_model(&swav(6, 0, 16), &d);
    let mut stepper = Stepper::sgd(&model, 1e-9, 10, 0.99);
    let views = vec![
        random::<4>([8, 3, 8, 8], 1, &d),
        random::<4>([8, 3, 8, 8], 2, &d),
    ];
    let queue = |m: &SelfSupervised<Backbone>| match &m.method {
        AnyMethod::Swav(s) => s.queue.clone().unwrap(),
        _ => panic!("SwAV expected"),
    };
    // Fill the queue with other images (a copy of the current batch would not change the
    // balanced assignment).
    let others = |seed| {
        vec![
            random::<4>([8, 3, 8, 8], seed, &d),
            random::<4>([8, 3, 8, 8], seed + 1, &d),
        ]
    };
    let before = loss(&model, &views, &stepper);
    let (model, _) = stepper.step(model, &others(10));
    assert!(!queue(&model).is_full());
    assert!((loss(&model, &views, &stepper) - before).abs() < 1e-6);
    let (model, _) = stepper.step(model, &others(20));
    assert!(queue(&model).is_full());
    let with_queue = loss(&model, &views, &stepper);
    assert!(
        (with_queue - before).abs() > 1e-6,
        "{with_queue} vs {before}: the full queue changed nothing"
    );
}
