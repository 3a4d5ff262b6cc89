//! Collapse statistics and the energy head on collapsed and healthy embeddings.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::collapse::{CollapseStats, embedding_std};
use selfsup::energy::Energy;

fn scalar(t: &Tensor<1>) -> f64 {
    values(t)[0]
}

#[test]
fn a_constant_encoder_output_is_collapsed() {
    let d = device();
    let row = random::<2>([1, 64], 3, &d);
    let constant = row.repeat_dim(0, 32);
    let stats = CollapseStats::from_views(constant.clone(), constant)
        .unwrap()
        .values();
    assert!(stats.embedding_std.abs() < 1e-4, "{stats:?}");
    assert!(stats.energy_gap.abs() < 1e-4, "{stats:?}");
}

#[test]
fn random_embeddings_spread_over_the_sphere() {
    let d = device();
    let dim = 128;
    let a = random::<2>([256, dim], 11, &d);
    let b = random::<2>([256, dim], 12, &d);
    let std = scalar(&embedding_std(a.clone()).unwrap());
    let expected = 1.0 / (dim as f64).sqrt();
    assert!(
        (std - expected).abs() < 0.1 * expected,
        "std {std} vs {expected}"
    );
    // Matched pairs: b is a small perturbation of a; unrelated pairs are independent.
    let matched = a.clone() + b.mul_scalar(0.1);
    let stats = CollapseStats::from_views(a, matched).unwrap().values();
    assert!(stats.energy_gap > 0.5, "{stats:?}");
}

#[test]
fn energies_of_matched_pairs_and_the_matrix() {
    let d = device();
    let a = random::<2>([4, 8], 1, &d);
    let same = Energy::Cosine
        .energy(a.clone(), a.clone().mul_scalar(3.0))
        .unwrap();
    assert!(values(&same).iter().all(|e| e.abs() < 1e-6));
    let opposite = Energy::SquaredL2
        .energy(a.clone(), a.clone().neg())
        .unwrap();
    assert!(values(&opposite).iter().all(|e| (e - 4.0).abs() < 1e-5));
    let b = random::<2>([5, 8], 2, &d);
    let matrix = Energy::Cosine.energy_matrix(a.clone(), b.clone()).unwrap();
    assert_eq!(matrix.dims(), [4, 5]);
    let row0 = values(
        &Energy::Cosine
            .energy(a.clone().narrow(0, 0, 1), b.narrow(0, 1, 1))
            .unwrap(),
    );
    assert!((values(&matrix)[1] - row0[0]).abs() < 1e-6);
    // SquaredL2 = 2 x Cosine.
    let l2 = Energy::SquaredL2
        .energy_matrix(a.clone(), a.clone())
        .unwrap();
    let cos = Energy::Cosine.energy_matrix(a.clone(), a).unwrap();
    for (x, y) in values(&l2).iter().zip(values(&cos)) {
        assert!((x - 2.0 * y).abs() < 1e-5);
    }
}

#[test]
fn the_prediction_error_energy_is_smooth_l1_for_pairs_the_matrix_and_the_gap() {
    let d = device();
    // smooth_l1 (beta 1): 0.5 x^2 below 1, |x| - 0.5 above: (0.125 + 2.5) / 2.
    let a = Tensor::<1>::from_floats([0.0, 3.0], &d).reshape([1, 2]);
    let b = Tensor::<1>::from_floats([0.5, 0.0], &d).reshape([1, 2]);
    let pair = Energy::PredictionError.energy(a, b).unwrap();
    assert_close("smooth-L1 energy", &values(&pair), &[1.3125]);
    // Entry (i, j) of the matrix is the energy of a_i against b_j.
    let a = random::<2>([3, 6], 4, &d).mul_scalar(2.0);
    let b = random::<2>([3, 6], 5, &d).mul_scalar(2.0);
    let matrix = values(
        &Energy::PredictionError
            .energy_matrix(a.clone(), b.clone())
            .unwrap(),
    );
    let mut pairwise = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            let e = Energy::PredictionError
                .energy(a.clone().narrow(0, i, 1), b.clone().narrow(0, j, 1))
                .unwrap();
            pairwise.push(values(&e)[0]);
        }
    }
    assert_close("prediction-error matrix", &matrix, &pairwise);
    // The gap: mean off-diagonal minus mean diagonal.
    let diagonal = (matrix[0] + matrix[4] + matrix[8]) / 3.0;
    let off = (matrix.iter().sum::<f64>() - 3.0 * diagonal) / 6.0;
    let gap = Energy::PredictionError.energy_gap(a, b).unwrap();
    assert_close("prediction-error gap", &values(&gap), &[off - diagonal]);
}

#[test]
fn energy_inputs_are_checked() {
    let d = device();
    let a = random::<2>([4, 8], 1, &d);
    let err = Energy::Cosine
        .energy(a.clone(), random::<2>([3, 8], 2, &d))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4, 8]") && err.contains("[3, 8]"), "{err}");
    assert!(
        Energy::Cosine
            .energy_matrix(a.clone(), random::<2>([3, 7], 2, &d))
            .is_err()
    );
    let one = random::<2>([1, 8], 1, &d);
    let err = Energy::Cosine
        .energy_gap(one.clone(), one)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch size 1"), "{err}");
}
