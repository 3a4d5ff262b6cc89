//! The off-diagonal sums of squares of `A^T A` and `A^T B` (VICReg's covariance, Barlow Twins'
//! cross-correlation) through the features and through the batch's Gram matrices: values and
//! gradients against a float64 computation of the `D x D` product, on both aspect ratios.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::method::barlow_twins::{
    BARLOW_TWINS_BN_EPS, barlow_twins_loss_through, normalize_features,
};
use selfsup::method::gram::{
    ProductSide, off_diagonal_cross_squares, off_diagonal_cross_squares_through,
    off_diagonal_self_squares_through,
};
use selfsup::method::{Vicreg, barlow_twins_loss};

/// Shapes `[N, D]`: wide (the batch side is cheaper), tall, square, and the fixtures' 8 x 16.
const SHAPES: [[usize; 2]; 5] = [[5, 37], [8, 16], [19, 6], [7, 7], [2, 33]];

/// A row-major `[n, d]` matrix in float64.
struct Host {
    values: Vec<f64>,
    n: usize,
    d: usize,
}

impl Host {
    fn of(t: &Tensor<2>) -> Self {
        let [n, d] = t.dims();
        Self {
            values: values(t),
            n,
            d,
        }
    }

    fn at(&self, b: usize, i: usize) -> f64 {
        self.values[b * self.d + i]
    }

    /// `(A^T B)` as a `d x d` row-major matrix.
    fn cross(&self, other: &Host) -> Vec<f64> {
        let mut product = vec![0.0; self.d * self.d];
        for i in 0..self.d {
            for j in 0..self.d {
                product[i * self.d + j] = (0..self.n).map(|b| self.at(b, i) * other.at(b, j)).sum();
            }
        }
        product
    }

    /// `A M` for a `d x d` matrix `M` (transposed when `transpose`), times `scale`.
    fn times(&self, m: &[f64], transpose: bool, scale: f64) -> Vec<f64> {
        let d = self.d;
        let entry = |k: usize, j: usize| {
            if transpose {
                m[j * d + k]
            } else {
                m[k * d + j]
            }
        };
        let mut out = vec![0.0; self.n * d];
        for b in 0..self.n {
            for j in 0..d {
                out[b * d + j] = scale * (0..d).map(|k| self.at(b, k) * entry(k, j)).sum::<f64>();
            }
        }
        out
    }
}

/// The product with its diagonal zeroed, and the sum of squares of what is left.
fn off_diagonal(mut product: Vec<f64>, d: usize) -> (Vec<f64>, f64) {
    for i in 0..d {
        product[i * d + i] = 0.0;
    }
    let sum = product.iter().map(|v| v * v).sum();
    (product, sum)
}

/// VICReg with the weights of a fixture.
fn vicreg_of(f: &serde_json::Value) -> Vicreg {
    let weight = |name: &str| f[name].as_f64().unwrap();
    Vicreg {
        lambda_invariance: weight("lambda_inv"),
        mu_variance: weight("mu_var"),
        nu_covariance: weight("nu_cov"),
        eps: weight("eps"),
    }
}

/// Rows with a common offset per feature, as uncentred embeddings have.
fn batch(shape: [usize; 2], seed: u64) -> Tensor<2> {
    let d = device();
    let offset = random([1, shape[1]], seed + 100, &d);
    (random(shape, seed, &d) + offset).require_grad()
}

#[test]
fn gram_squares_match_float64_through_both_sides() {
    for (k, shape) in SHAPES.into_iter().enumerate() {
        for side in [ProductSide::Features, ProductSide::Batch] {
            let a = batch(shape, 10 + k as u64);
            let host = Host::of(&a);
            let (masked, expected) = off_diagonal(host.cross(&host), shape[1]);
            let value = off_diagonal_self_squares_through(a.clone(), side);
            let what = format!("{shape:?} {side:?}");
            assert_close(&format!("{what} value"), &values(&value), &[expected]);
            // d/dA sum_{i != j} (A^T A)_ij^2 = 4 A M, M the product without its diagonal.
            let gradient = a.grad(&value.backward()).unwrap();
            let expected_gradient = host.times(&masked, false, 4.0);
            assert_close(
                &format!("{what} gradient"),
                &values(&gradient),
                &expected_gradient,
            );
        }
    }
}

#[test]
fn cross_squares_match_float64_through_both_sides() {
    for (k, shape) in SHAPES.into_iter().enumerate() {
        for side in [ProductSide::Features, ProductSide::Batch] {
            let (a, b) = (batch(shape, 20 + k as u64), batch(shape, 30 + k as u64));
            let (host_a, host_b) = (Host::of(&a), Host::of(&b));
            let (masked, expected) = off_diagonal(host_a.cross(&host_b), shape[1]);
            let value = off_diagonal_cross_squares_through(a.clone(), b.clone(), side);
            let what = format!("{shape:?} {side:?}");
            assert_close(&format!("{what} value"), &values(&value), &[expected]);
            // With M = A^T B without its diagonal: dA = 2 B M^T, dB = 2 A M.
            let grads = value.backward();
            let expected_a = host_b.times(&masked, true, 2.0);
            let expected_b = host_a.times(&masked, false, 2.0);
            assert_close(
                &format!("{what} dA"),
                &values(&a.grad(&grads).unwrap()),
                &expected_a,
            );
            assert_close(
                &format!("{what} dB"),
                &values(&b.grad(&grads).unwrap()),
                &expected_b,
            );
        }
    }
}

#[test]
fn the_batch_side_is_taken_only_where_it_is_cheaper_and_accurate() {
    // A^T A: 3 N^2 D multiply-adds through the batch against 3 N D^2; taken at 2 N <= D, where
    // subtracting the diagonal amplifies rounding by at most 2 (gram.rs).
    assert_eq!(ProductSide::cheaper(256, 2048, true), ProductSide::Batch);
    assert_eq!(ProductSide::cheaper(1024, 2048, true), ProductSide::Batch);
    assert_eq!(
        ProductSide::cheaper(1025, 2048, true),
        ProductSide::Features
    );
    // A^T B: two Gram matrices, 6 N^2 D against 3 N D^2.
    assert_eq!(ProductSide::cheaper(256, 2048, false), ProductSide::Batch);
    assert_eq!(ProductSide::cheaper(1023, 2048, false), ProductSide::Batch);
    assert_eq!(
        ProductSide::cheaper(1024, 2048, false),
        ProductSide::Features
    );
}

#[test]
fn both_losses_match_lightly_when_the_batch_side_is_taken() {
    // The fixtures are 8 x 16: VICReg's covariance already goes through the batch
    // (losses_match_lightly.rs); Barlow Twins' cross-correlation (2 N = D) goes through the
    // features there, so here the same inputs are repeated along the features: 8 x 32 takes the
    // batch side, and duplicating every feature multiplies each kind of sum predictably.
    let f = fixture("barlow_twins.json");
    let d = device();
    let (z1, z2) = (tensor::<2>(&f["z1"], &d), tensor::<2>(&f["z2"], &d));
    let wide = |z: Tensor<2>| Tensor::cat(vec![z.clone(), z], 1);
    let lambda = f["lambda"].as_f64().unwrap();
    assert_eq!(ProductSide::cheaper(8, 32, false), ProductSide::Batch);
    let narrow_loss = barlow_twins_loss(z1.clone(), z2.clone(), lambda).unwrap();
    let wide_loss = barlow_twins_loss(wide(z1.clone()), wide(z2.clone()), lambda).unwrap();
    // Duplicated features: the diagonal sum doubles; the off-diagonal sum becomes
    // 4 (off + diag^2) - 2 diag^2 over the doubled matrix.
    let n = z1.dims()[0] as f64;
    let normalized = |z: Tensor<2>| normalize_features(z, BARLOW_TWINS_BN_EPS);
    let (a, b) = (normalized(z1), normalized(z2));
    let diagonal = (a.clone() * b.clone()).sum_dim(0).div_scalar(n);
    let on = values(&diagonal.clone().sub_scalar(1.0).square().sum())[0];
    let diagonal_squares = values(&diagonal.square().sum())[0];
    let off = values(&off_diagonal_cross_squares(a, b).div_scalar(n * n))[0];
    let expected_wide =
        2.0 * on + lambda * (4.0 * (off + diagonal_squares) - 2.0 * diagonal_squares);
    assert_close(
        "narrow loss",
        &values(&narrow_loss),
        &[f["loss"].as_f64().unwrap()],
    );
    assert_close("wide loss", &values(&wide_loss), &[expected_wide]);

    let v = fixture("vicreg.json");
    let vicreg = vicreg_of(&v);
    assert_eq!(ProductSide::cheaper(8, 16, true), ProductSide::Batch);
    let loss = vicreg
        .pair_loss(tensor::<2>(&v["z1"], &d), tensor::<2>(&v["z2"], &d))
        .unwrap();
    assert_close(
        "VICReg loss",
        &values(&loss),
        &[v["loss"].as_f64().unwrap()],
    );
}

#[test]
fn both_losses_match_lightly_through_either_side() {
    let d = device();
    let v = fixture("vicreg.json");
    let vicreg = vicreg_of(&v);
    let b = fixture("barlow_twins.json");
    let lambda = b["lambda"].as_f64().unwrap();
    for side in [ProductSide::Features, ProductSide::Batch] {
        let (z1, z2) = (leaf::<2>(&v["z1"], &d), leaf::<2>(&v["z2"], &d));
        let loss = vicreg
            .pair_loss_through(z1.clone(), z2.clone(), side)
            .unwrap();
        let what = format!("VICReg {side:?}");
        assert_close(&what, &values(&loss), &[v["loss"].as_f64().unwrap()]);
        let grads = loss.backward();
        assert_tensor("VICReg grad_z1", &z1.grad(&grads).unwrap(), &v["grad_z1"]);
        assert_tensor("VICReg grad_z2", &z2.grad(&grads).unwrap(), &v["grad_z2"]);

        let (z1, z2) = (leaf::<2>(&b["z1"], &d), leaf::<2>(&b["z2"], &d));
        let loss = barlow_twins_loss_through(z1.clone(), z2.clone(), lambda, side).unwrap();
        let what = format!("Barlow Twins {side:?}");
        assert_close(&what, &values(&loss), &[b["loss"].as_f64().unwrap()]);
        let grads = loss.backward();
        assert_tensor("Barlow grad_z1", &z1.grad(&grads).unwrap(), &b["grad_z1"]);
        assert_tensor("Barlow grad_z2", &z2.grad(&grads).unwrap(), &b["grad_z2"]);
    }
}
