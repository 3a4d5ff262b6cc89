//! Bad input gives a clear `selfsup::Error`, never a panic.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::Error;
use selfsup::head::ProjectionHeadConfig;
use selfsup::objective::{
    ObjectiveConfig, ObjectiveState, SwavConfig, ViewEmbeddings, barlow_twins_loss, byol_loss,
    simsiam_loss, swav_loss,
};
use selfsup::step::train_step;

fn views(batch: usize, seed: u64, d: &burn::tensor::Device) -> Vec<Tensor<4>> {
    vec![
        random::<4>([batch, 3, 8, 8], seed, d),
        random::<4>([batch, 3, 8, 8], seed + 1, d),
    ]
}

#[test]
fn mismatched_batch_sizes_or_dims_between_branches() {
    let d = device();
    let a = random::<2>([8, 16], 1, &d);
    let fewer = random::<2>([7, 16], 2, &d);
    let narrower = random::<2>([8, 15], 3, &d);
    for other in [fewer, narrower] {
        let pair = [a.clone(), other.clone()];
        let same = [a.clone(), a.clone()];
        let errors = [
            byol_loss(&same, &pair).unwrap_err(),
            simsiam_loss(&same, &pair).unwrap_err(),
            barlow_twins_loss(a.clone(), other.clone(), 0.0051).unwrap_err(),
            selfsup::objective::VicregLoss::default()
                .pair_loss(a.clone(), other.clone())
                .unwrap_err(),
            swav_loss(&pair, &[], None, 0.1, 3, 0.05).unwrap_err(),
        ];
        for e in errors {
            assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("expected shape") && text.contains("found"),
                "{text}"
            );
        }
    }
    // Views of different batch sizes in a training step.
    let objective = ObjectiveConfig::Byol;
    let model = tiny_model(&objective, &d);
    let mut state = sgd_state(&objective, 10, 0.99);
    let bad = vec![
        random::<4>([8, 3, 8, 8], 1, &d),
        random::<4>([6, 3, 8, 8], 2, &d),
    ];
    let err = train_step(model, &bad, 2, 0.1, &mut state).unwrap_err();
    assert!(err.to_string().contains("batch size of view 1"), "{err}");
}

#[test]
fn wrong_channels_or_missing_views_are_errors() {
    let d = device();
    let objective = ObjectiveConfig::SimSiam;
    let model = tiny_model(&objective, &d);
    let gray = vec![
        random::<4>([4, 1, 8, 8], 1, &d),
        random::<4>([4, 1, 8, 8], 2, &d),
    ];
    let err = model.embedding.embed_views(&gray, 2).unwrap_err();
    assert!(err.to_string().contains("channels of view 0"), "{err}");
    let err = model.embedding.embed_views(&gray[..1], 1).unwrap_err();
    assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    let err = byol_loss(&[], &[]).unwrap_err();
    assert!(matches!(err, Error::MissingInput { .. }), "{err}");
}

#[test]
fn batch_size_one_where_batch_statistics_are_needed() {
    let d = device();
    let one = random::<2>([1, 16], 1, &d);
    let e = barlow_twins_loss(one.clone(), one.clone(), 0.0051).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BatchTooSmall {
                batch_size: 1,
                minimum: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = selfsup::objective::VicregLoss::default()
        .pair_loss(one.clone(), one.clone())
        .unwrap_err();
    assert!(e.to_string().contains("VICReg"), "{e}");
    // A BatchNorm head in training mode.
    let head = ProjectionHeadConfig::byol_projector(16, 32, 8)
        .init(&d)
        .unwrap();
    let e = head.forward(one).unwrap_err();
    assert!(e.to_string().contains("batch size 1"), "{e}");
    // A whole training step.
    for objective in [ObjectiveConfig::Byol, ObjectiveConfig::barlow_twins()] {
        let model = tiny_model(&objective, &d);
        let mut state = sgd_state(&objective, 10, 0.99);
        let err = train_step(model, &views(1, 3, &d), 2, 0.1, &mut state).unwrap_err();
        assert!(matches!(err, Error::BatchTooSmall { .. }), "{err}");
    }
}

#[test]
fn non_finite_inputs_name_the_input() {
    let d = device();
    let good = random::<2>([8, 16], 1, &d);
    let mut nan = random::<2>([8, 16], 2, &d);
    nan = nan.slice_assign([3..4, 5..6], Tensor::<2>::full([1, 1], f32::NAN, &d));
    let inf = random::<2>([8, 16], 3, &d)
        .slice_assign([0..1, 0..1], Tensor::full([1, 1], f32::INFINITY, &d));
    let configs = [
        ObjectiveConfig::Byol,
        ObjectiveConfig::SimSiam,
        ObjectiveConfig::barlow_twins(),
        ObjectiveConfig::Swav(SwavConfig::new().with_num_prototypes(4)),
        ObjectiveConfig::vicreg(),
        ObjectiveConfig::ntxent(),
    ];
    for config in configs {
        for bad in [nan.clone(), inf.clone()] {
            let objective = config.init(16, &d).unwrap();
            let embeddings = ViewEmbeddings {
                projections: vec![good.clone(), bad.clone()],
                predictions: vec![good.clone(), bad.clone()],
                targets: vec![good.clone(), bad.clone()],
                num_global: 2,
            };
            let err = objective
                .compute(&embeddings, &mut ObjectiveState::default())
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::NonFinite { .. }), "{config:?}: {text}");
            assert!(text.contains("view 1"), "{config:?}: {text}");
        }
    }
}

#[test]
fn invalid_configurations_are_errors() {
    let d = device();
    assert!(
        ObjectiveConfig::Swav(SwavConfig::new().with_temperature(0.0))
            .init(8, &d)
            .is_err()
    );
    assert!(
        ObjectiveConfig::Swav(SwavConfig::new().with_num_prototypes(0))
            .init(8, &d)
            .is_err()
    );
    let err = ProjectionHeadConfig::new(vec![
        selfsup::head::HeadBlockConfig::linear(8, 16, true),
        selfsup::head::HeadBlockConfig::linear(12, 4, true),
    ])
    .init(&d)
    .unwrap_err();
    assert!(err.to_string().contains("blocks[1].input_dim"), "{err}");
    // A projector that does not fit the backbone.
    let backbone = tiny_backbone(&d);
    let config = selfsup::siamese::JointEmbeddingConfig::new(ProjectionHeadConfig::byol_projector(
        99, 16, 8,
    ));
    let err = config.init(backbone).unwrap_err();
    assert!(err.to_string().contains("feature_dim"), "{err}");
    // BYOL without a target network.
    let backbone = tiny_backbone(&d);
    let embedding =
        selfsup::siamese::JointEmbeddingConfig::new(ProjectionHeadConfig::byol_projector(8, 16, 8))
            .with_predictor(Some(ProjectionHeadConfig::byol_predictor(8, 16)))
            .init(backbone)
            .unwrap();
    let objective = ObjectiveConfig::Byol.init(8, &d).unwrap();
    let err = selfsup::step::SelfSupervised::new(embedding, objective).unwrap_err();
    assert!(err.to_string().contains("ema_target"), "{err}");
    // lr <= 0.
    let model = tiny_model(&ObjectiveConfig::SimSiam, &d);
    let mut state = sgd_state(&ObjectiveConfig::SimSiam, 10, 0.99);
    let err = train_step(model, &views(4, 1, &d), 2, 0.0, &mut state).unwrap_err();
    assert!(err.to_string().contains("`lr`"), "{err}");
}
