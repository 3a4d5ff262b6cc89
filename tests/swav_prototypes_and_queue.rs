//! SwAV specifics: unit-norm prototypes, frozen prototypes, the queue of past embeddings.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::objective::{EmbeddingQueue, Objective, ObjectiveConfig, SwavConfig};
use selfsup::step::train_step;

fn prototypes(objective: &Objective) -> Tensor<2> {
    match objective {
        Objective::Swav(s) => s.prototypes.weight.val(),
        _ => panic!("SwAV expected"),
    }
}

fn row_norms(w: &Tensor<2>) -> Vec<f64> {
    values(&w.clone().square().sum_dim(1).sqrt())
}

#[test]
fn prototypes_are_frozen_then_learn_and_stay_unit_norm() {
    let d = device();
    let config = ObjectiveConfig::Swav(
        SwavConfig::new()
            .with_num_prototypes(6)
            .with_freeze_prototypes_steps(2),
    );
    let mut model = tiny_model(&config, &d);
    let mut state = sgd_state(&config, 10, 0.99);
    let views = vec![
        random::<4>([8, 3, 8, 8], 1, &d),
        random::<4>([8, 3, 8, 8], 2, &d),
    ];
    let initial = values(&prototypes(&model.objective));
    assert!(
        row_norms(&prototypes(&model.objective))
            .iter()
            .all(|n| (n - 1.0).abs() < 1e-5)
    );
    for _ in 0..2 {
        model = train_step(model, &views, 2, 0.5, &mut state).unwrap().0;
    }
    // Frozen: the optimiser did not touch them (re-normalising unit rows changes nothing).
    assert_close(
        "frozen prototypes",
        &values(&prototypes(&model.objective)),
        &initial,
    );
    model = train_step(model, &views, 2, 0.5, &mut state).unwrap().0;
    let learned = values(&prototypes(&model.objective));
    assert!(
        learned
            .iter()
            .zip(&initial)
            .any(|(a, b)| (a - b).abs() > 1e-6),
        "prototypes did not learn after the frozen steps"
    );
    // Normalised before every use.
    let objective = model.objective.before_step();
    assert!(
        row_norms(&prototypes(&objective))
            .iter()
            .all(|n| (n - 1.0).abs() < 1e-5)
    );
}

#[test]
fn queue_keeps_the_newest_embeddings_and_is_used_once_full() {
    let d = device();
    let mut queue = EmbeddingQueue::new(5, 2).unwrap();
    assert!(!queue.is_full());
    let a = random::<2>([3, 4], 1, &d);
    let b = random::<2>([3, 4], 2, &d);
    queue.push(0, a.clone()).unwrap();
    assert!(queue.full(0).is_none());
    queue.push(0, b.clone()).unwrap();
    let stored = queue.full(0).unwrap();
    // Newest first, oldest dropped beyond capacity.
    let expected = Tensor::cat(vec![b, a.narrow(0, 0, 2)], 0);
    assert_close("queue", &values(&stored), &values(&expected));
    assert!(!queue.is_full(), "crop 1 is still empty");
    assert!(queue.push(2, random::<2>([3, 4], 3, &d)).is_err());
    assert!(queue.push(0, random::<2>([3, 5], 3, &d)).is_err());
    assert!(EmbeddingQueue::new(0, 2).is_err());

    // In training: the loss changes once the queue is full (it enlarges Sinkhorn's batch).
    let config = ObjectiveConfig::Swav(
        SwavConfig::new()
            .with_num_prototypes(6)
            .with_queue_length(16),
    );
    let model = tiny_model(&config, &d);
    let mut state = sgd_state(&config, 10, 0.99);
    let views = vec![
        random::<4>([8, 3, 8, 8], 1, &d),
        random::<4>([8, 3, 8, 8], 2, &d),
    ];
    // Fill the queue with other images (a copy of the current batch would not change the
    // balanced assignment).
    let others = |seed| {
        vec![
            random::<4>([8, 3, 8, 8], seed, &d),
            random::<4>([8, 3, 8, 8], seed + 1, &d),
        ]
    };
    let (model, _) = train_step(model, &others(10), 2, 1e-9, &mut state).unwrap();
    assert!(!state.objective.queue.as_ref().unwrap().is_full());
    let (model, _) = train_step(model, &others(20), 2, 1e-9, &mut state).unwrap();
    assert!(state.objective.queue.as_ref().unwrap().is_full());
    let embeddings = model.embedding.embed_views(&views, 2).unwrap();
    let with_queue = values(
        &model
            .objective
            .loss(&embeddings, &mut state.objective.clone())
            .unwrap(),
    )[0];
    let mut no_queue = state.objective.clone();
    no_queue.queue = None;
    let without = values(&model.objective.loss(&embeddings, &mut no_queue).unwrap())[0];
    assert!(
        (with_queue - without).abs() > 1e-6,
        "{with_queue} vs {without}"
    );
}
