//! Evaluation: kNN against lightly's fixture, reports, and the collapse monitors.

mod common;

use selfsup::eval::{ClassificationReport, KnnClassifier, KnnConfig};

#[test]
fn knn_ranking_matches_lightly() {
    let f = common::fixture("knn.json");
    let device = common::device();
    let bank = common::tensor::<2>(&f["bank"], &device);
    let query = common::tensor::<2>(&f["query"], &device);
    let labels: Vec<usize> = f["bank_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let config = KnnConfig {
        k: f["k"].as_u64().unwrap() as usize,
        temperature: f["t"].as_f64().unwrap(),
    };
    let knn = KnnClassifier::new(
        bank,
        labels,
        f["num_classes"].as_u64().unwrap() as usize,
        config,
    )
    .unwrap();
    let ranked = knn.ranked_classes(query.clone()).unwrap();
    let scores = knn.class_scores(query).unwrap();
    let expected = f["ranked_classes"].as_array().unwrap();
    for (i, (got, want)) in ranked.iter().zip(expected).enumerate() {
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        // Classes with no neighbour score 0 and tie; their order is arbitrary in lightly, so
        // the ranking must match over the classes that scored.
        let scored = scores[i].iter().filter(|&&s| s > 0.0).count();
        assert!(scored >= 1);
        assert_eq!(
            got[..scored],
            want[..scored],
            "query {i}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn knn_rejects_bad_input() {
    let device = common::device();
    let bank = common::random([4, 3], 1, &device);
    assert!(KnnClassifier::new(bank.clone(), vec![0, 1], 2, KnnConfig::default()).is_err());
    let e = KnnClassifier::new(bank.clone(), vec![0, 1, 2, 5], 3, KnnConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains('5'), "{e}");
    let bad_t = KnnConfig {
        k: 3,
        temperature: 0.0,
    };
    assert!(KnnClassifier::new(bank.clone(), vec![0; 4], 1, bad_t).is_err());
    let knn = KnnClassifier::new(bank, vec![0, 0, 1, 1], 2, KnnConfig::default()).unwrap();
    assert!(knn.predict(common::random([2, 5], 2, &device)).is_err());
}

#[test]
fn knn_finds_the_class_of_separated_clusters() {
    let device = common::device();
    // Two clusters around +e0 and -e0: every query is classified by its side.
    let bank: Vec<f64> = (0..20)
        .flat_map(|i| {
            let s = if i < 10 { 1.0 } else { -1.0 };
            vec![s, 0.1 * (i as f64).sin(), 0.1 * (i as f64).cos()]
        })
        .collect();
    let bank = common::tensor::<2>(
        &serde_json::json!(bank.chunks(3).collect::<Vec<_>>()),
        &device,
    );
    let labels: Vec<usize> = (0..20).map(|i| usize::from(i >= 10)).collect();
    let knn = KnnClassifier::new(
        bank,
        labels,
        2,
        KnnConfig {
            k: 5,
            temperature: 0.1,
        },
    )
    .unwrap();
    let queries = common::tensor::<2>(
        &serde_json::json!([[0.9, 0.2, 0.0], [-2.0, 0.0, 0.1]]),
        &device,
    );
    let report = knn.evaluate(queries, &[0, 1]).unwrap();
    assert_eq!(report.top1, 1.0);
    assert_eq!(report.confusion, vec![vec![1, 0], vec![0, 1]]);
}

#[test]
fn report_counts_and_prints_the_confusion_matrix() {
    let r = ClassificationReport::from_predictions(&[0, 1, 1, 2], &[0, 1, 2, 2], 3);
    assert_eq!(r.top1, 0.75);
    assert_eq!(r.confusion[2], vec![0, 1, 1]);
    let table = r.confusion_table(&["cat".into(), "dog".into(), "frog".into()]);
    assert!(table.contains("frog |     0     1     1"), "{table}");
}

#[test]
fn effective_rank_follows_the_rankme_formula() {
    use selfsup::eval::rank::effective_rank_of;
    // Orthogonal columns of equal norm: every singular value equal, rank = d.
    let n = 12;
    let d = 4;
    let mut equal = vec![0.0f32; n * d];
    for c in 0..d {
        equal[(3 * c) * d + c] = 2.0;
    }
    assert!((effective_rank_of(&equal, n, d) - 4.0).abs() < 1e-4);
    // Collapse: identical rows give rank 1.
    let collapsed: Vec<f32> = (0..n).flat_map(|_| [0.3f32, -1.0, 2.0, 0.5]).collect();
    assert!((effective_rank_of(&collapsed, n, d) - 1.0).abs() < 1e-4);
    // Singular values 3 and 1: p = (0.75, 0.25), rank = exp(H(p)).
    let mut two = vec![0.0f32; n * d];
    two[0] = 3.0;
    two[d + 1] = 1.0;
    let h: f64 = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
    assert!((effective_rank_of(&two, n, d) - h.exp()).abs() < 1e-4);
    // A random rotation of the same spectrum gives the same rank (Jacobi on a dense matrix).
    let device = common::device();
    let z = common::random([64, 16], 9, &device);
    let r = selfsup::eval::effective_rank(z.clone()).unwrap();
    assert!(r > 10.0 && r <= 16.0, "{r}");
    let wide = selfsup::eval::effective_rank(z.transpose()).unwrap();
    assert!((r - wide).abs() < 1e-6, "{r} {wide}");
}

#[test]
fn the_linear_probe_separates_linearly_separable_features() {
    use selfsup::eval::LinearProbeConfig;
    use selfsup::eval::linear_probe::{fit_linear, predict};
    let device = selfsup::prelude::Device::flex();
    // Three classes along three axes, with noise.
    let noise = common::random_values(90 * 4, 5);
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for i in 0..90 {
        let class = i % 3;
        for d in 0..4 {
            let signal = if d == class { 3.0 } else { 0.0 };
            values.push(signal + 0.3 * noise[i * 4 + d]);
        }
        labels.push(class);
    }
    let x = burn::tensor::Tensor::<2>::from_data(
        burn::tensor::TensorData::new(values, [90, 4]),
        &device,
    );
    let config = LinearProbeConfig {
        epochs: 40,
        batch_size: 16,
        lr: 0.05,
        ..LinearProbeConfig::default()
    };
    let classifier = fit_linear(x.clone(), &labels, 3, &config, &device).unwrap();
    let predicted = predict(&classifier, x).unwrap();
    let report = ClassificationReport::from_predictions(&predicted, &labels, 3);
    assert!(report.top1 > 0.95, "{}", report.top1);
}

#[test]
fn the_frozen_evaluation_equals_knn_and_the_probe_run_apart() {
    use std::sync::Arc;

    use selfsup::augment::ViewTransform;
    use selfsup::data::{ImageDataset, ImageFolder};
    use selfsup::eval::{LinearProbeConfig, linear_probe};
    use selfsup::train::{KnnEvaluation, frozen_evaluation, knn_accuracy};
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");
    let images: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(sample).unwrap());
    let device = common::plain_device();
    let encoder = common::tiny_backbone(&device);
    let eval = KnnEvaluation {
        bank: images.clone(),
        queries: images.clone(),
        transform: ViewTransform::eval(None, 32),
        batch_size: 7,
    };
    let knn = KnnConfig {
        k: 3,
        ..KnnConfig::default()
    };
    let probe = LinearProbeConfig {
        epochs: 3,
        batch_size: 4,
        feature_batch_size: 7,
        ..LinearProbeConfig::default()
    };
    let together = frozen_evaluation(&encoder, &eval, knn, &probe, &device).unwrap();
    let knn_apart = knn_accuracy(&encoder, &eval, knn, &device).unwrap();
    let probe_apart = linear_probe(
        &encoder,
        images.clone(),
        images,
        &eval.transform,
        &probe,
        &device,
    )
    .unwrap();
    assert_eq!(together.knn_top1, knn_apart);
    assert_eq!(together.probe.top1, probe_apart.top1);
    assert_eq!(together.probe.confusion, probe_apart.confusion);
    // The probe's settings are checked before any image is encoded.
    let no_epochs = LinearProbeConfig { epochs: 0, ..probe };
    let err = frozen_evaluation(&encoder, &eval, knn, &no_epochs, &device).unwrap_err();
    assert!(err.to_string().contains("epochs 0"), "{err}");
}

#[test]
fn fine_tuning_a_vit_decays_the_learning_rate_layer_by_layer() {
    use std::sync::Arc;

    use selfsup::augment::ViewTransform;
    use selfsup::backbone::{Vit, VitConfig};
    use selfsup::data::{ImageDataset, ImageFolder};
    use selfsup::eval::{FineTuneConfig, fine_tune};
    use selfsup::train::{KnnEvaluation, knn_accuracy};
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");
    let images: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(sample).unwrap());
    let device = common::plain_device();
    // 2 blocks of width 32 on 16 patches of 8 pixels, drawn from a fixed seed.
    let autodiff = device.clone().autodiff();
    autodiff.seed(7);
    let vit = VitConfig::new(32, 8, 2, 2, 32, 64).init(&autodiff).unwrap();
    // Draw every (lazily initialised) parameter now, while the seed holds.
    let _ = common::collect(&vit);
    // Its pooled class token tells the images apart: each is its own nearest neighbour.
    let eval = KnnEvaluation {
        bank: images.clone(),
        queries: images.clone(),
        transform: ViewTransform::eval(None, 32),
        batch_size: 8,
    };
    let nearest = KnnConfig {
        k: 1,
        ..KnnConfig::default()
    };
    assert_eq!(knn_accuracy(&vit, &eval, nearest, &device).unwrap(), 1.0);
    let tune = |layer_decay: Option<f64>| {
        let config = FineTuneConfig {
            epochs: 1,
            batch_size: 4,
            layer_decay,
            ..FineTuneConfig::new(32)
        };
        let transform = ViewTransform::eval(None, 32);
        let (model, _) = fine_tune(
            vit.clone(),
            images.clone(),
            images.clone(),
            &transform,
            &config,
            &device,
        )
        .unwrap();
        model
    };
    let largest_change = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    // How far the patch embedding and the last block's first MLP weight moved.
    let moved = |tuned: &Vit| {
        let top = |v: &Vit| common::values(&v.encoder.layers[1].mlp.linear_1.weight.val());
        let embedding = |v: &Vit| common::values(&v.conv_proj.weight.val());
        (
            largest_change(&embedding(tuned), &embedding(&vit)),
            largest_change(&top(tuned), &top(&vit)),
        )
    };
    let plain = tune(None);
    let decay = 0.1;
    let decayed = tune(Some(decay));
    let (embedding, top_block) = moved(&plain.backbone);
    let (embedding_decayed, top_block_decayed) = moved(&decayed.backbone);
    assert!(embedding > 0.0 && top_block > 0.0);
    // With 2 blocks the patch embedding trains at decay^3 times the rate, the last block at
    // decay times (SGD: each step moves a weight in proportion to its rate, and the slower
    // layers change the others' gradients little in 5 steps).
    for (what, ratio, expected) in [
        (
            "patch embedding",
            embedding_decayed / embedding,
            decay.powi(3),
        ),
        ("last block", top_block_decayed / top_block, decay),
    ] {
        assert!(
            ratio > 0.5 * expected && ratio < 2.0 * expected,
            "the {what} moved {ratio} as far, expected about {expected}"
        );
    }
}
