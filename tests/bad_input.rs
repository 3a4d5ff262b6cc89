//! Bad input gives a clear `selfsup::Error`, never a panic.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::Error;
use selfsup::method::{
    AnyMethodConfig, DeepClusterConfig, Method, MethodConfig, Preset, SwavConfig, TargetViews,
    Vicreg, VicregConfig, barlow_twins_loss, byol_loss, simsiam_loss, swav_loss,
};
use selfsup::model::{HeadBlockConfig, JointEmbeddingConfig, ProjectionHeadConfig};
use selfsup::step::SelfSupervised;

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
            vicreg().pair_loss(a.clone(), other.clone()).unwrap_err(),
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
    let model = tiny_model(&AnyMethodConfig::byol(Preset::Cifar), &d);
    let mut stepper = Stepper::sgd(&model, 0.1, 10, 0.99);
    let bad = vec![
        random::<4>([8, 3, 8, 8], 1, &d),
        random::<4>([6, 3, 8, 8], 2, &d),
    ];
    let err = stepper.try_step(model, &bad).unwrap_err();
    assert!(err.to_string().contains("batch size of view 1"), "{err}");
}

#[test]
fn wrong_channels_or_missing_views_are_errors() {
    let d = device();
    let model = tiny_model(&AnyMethodConfig::simsiam(Preset::Cifar), &d);
    let gray = vec![
        random::<4>([4, 1, 8, 8], 1, &d),
        random::<4>([4, 1, 8, 8], 2, &d),
    ];
    let err = model
        .embedding
        .embed_views(&gray, 2, TargetViews::All)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("view 0") && message.contains("channels"),
        "{err}"
    );
    let err = model
        .embedding
        .embed_views(&gray[..1], 1, TargetViews::All)
        .unwrap_err();
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
    let e = vicreg().pair_loss(one.clone(), one.clone()).unwrap_err();
    assert!(e.to_string().contains("VICReg"), "{e}");
    // A BatchNorm head in training mode.
    let head = ProjectionHeadConfig::byol_projector(16, 32, 8)
        .init(&d)
        .unwrap();
    let e = head.forward(one).unwrap_err();
    assert!(e.to_string().contains("batch size 1"), "{e}");
    // A whole training step.
    for method in [
        AnyMethodConfig::byol(Preset::Cifar),
        AnyMethodConfig::barlow_twins(Preset::Cifar),
    ] {
        let model = tiny_model(&method, &d);
        let mut stepper = Stepper::sgd(&model, 0.1, 10, 0.99);
        let err = stepper.try_step(model, &views(1, 3, &d)).unwrap_err();
        assert!(matches!(err, Error::BatchTooSmall { .. }), "{err}");
    }
}

/// Every built-in method with small heads, prototypes and queues.
fn every_method() -> Vec<AnyMethodConfig> {
    AnyMethodConfig::NAMES
        .iter()
        // The masked-image methods need a ViT and masks: tests/masked_image.rs.
        .filter(|name| !matches!(**name, "mae" | "ijepa"))
        .map(
            |name| match AnyMethodConfig::preset(name, Preset::Cifar).unwrap() {
                AnyMethodConfig::Swav(c) => AnyMethodConfig::Swav(SwavConfig {
                    num_prototypes: 4,
                    ..c
                }),
                AnyMethodConfig::DeepCluster(c) => {
                    AnyMethodConfig::DeepCluster(DeepClusterConfig {
                        num_prototypes: vec![4],
                        ..c
                    })
                }
                other => other,
            },
        )
        .collect()
}

fn vicreg() -> Vicreg {
    VicregConfig::default()
        .init(&dummy_setup(), &device())
        .unwrap()
}

fn dummy_setup() -> selfsup::method::MethodSetup {
    selfsup::method::MethodSetup {
        embedding_dim: 16,
        num_views: 2,
        num_global: 2,
        feature_dim: 8,
        dataset_len: 8,
        seed: 0,
    }
}

#[test]
fn non_finite_inputs_name_the_input() {
    let d = device();
    let clean = random::<4>([8, 3, 8, 8], 1, &d);
    let nan = random::<4>([8, 3, 8, 8], 2, &d).slice_assign(
        [3..4, 0..1, 5..6, 5..6],
        Tensor::<4>::full([1, 1, 1, 1], f32::NAN, &d),
    );
    let inf = random::<4>([8, 3, 8, 8], 3, &d).slice_assign(
        [0..1, 0..1, 0..1, 0..1],
        Tensor::<4>::full([1, 1, 1, 1], f32::INFINITY, &d),
    );
    for method in every_method() {
        for bad in [nan.clone(), inf.clone()] {
            let model = tiny_model(&method, &d);
            let model = SelfSupervised {
                method: model.method.start_epoch(0, 1).unwrap(),
                ..model
            };
            let mut stepper = Stepper::sgd(&model, 0.1, 10, 0.99);
            let err = stepper.try_step(model, &[clean.clone(), bad]).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::NonFinite { .. }), "{method:?}: {text}");
            assert!(text.contains("view 1"), "{method:?}: {text}");
        }
    }
}

#[test]
fn invalid_configurations_are_errors() {
    let d = device();
    let swav = SwavConfig::preset(Preset::Cifar);
    for (bad, field) in [
        (
            SwavConfig {
                temperature: 0.0,
                ..swav.clone()
            },
            "method.temperature",
        ),
        (
            SwavConfig {
                num_prototypes: 0,
                ..swav.clone()
            },
            "method.num_prototypes",
        ),
    ] {
        let err = AnyMethodConfig::Swav(bad)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    let err = ProjectionHeadConfig::new(vec![
        HeadBlockConfig::linear(8, 16, true),
        HeadBlockConfig::linear(12, 4, true),
    ])
    .init(&d)
    .unwrap_err();
    assert!(err.to_string().contains("blocks[1].input_dim"), "{err}");
    // A projector that does not fit the backbone.
    let backbone = tiny_backbone(&d);
    let config = JointEmbeddingConfig::new(ProjectionHeadConfig::byol_projector(99, 16, 8));
    let err = config.init(backbone).unwrap_err();
    assert!(err.to_string().contains("feature_dim"), "{err}");
    // BYOL without a target network.
    let backbone = tiny_backbone(&d);
    let embedding = JointEmbeddingConfig::new(ProjectionHeadConfig::byol_projector(8, 16, 8))
        .with_predictor(Some(ProjectionHeadConfig::byol_predictor(8, 16)))
        .init(backbone)
        .unwrap();
    let byol = AnyMethodConfig::byol(Preset::Cifar)
        .init(&dummy_setup(), &d)
        .unwrap();
    let err = SelfSupervised::new(embedding, byol).unwrap_err();
    assert!(err.to_string().contains("momentum_target"), "{err}");
    // lr <= 0.
    let model = tiny_model(&AnyMethodConfig::simsiam(Preset::Cifar), &d);
    let mut stepper = Stepper::sgd(&model, 0.0, 10, 0.99);
    let err = stepper.try_step(model, &views(4, 1, &d)).unwrap_err();
    assert!(err.to_string().contains("`lr`"), "{err}");
}
