//! Effective rank of an embedding batch (RankMe; Garrido et al. 2023, "RankMe: Assessing the
//! downstream performance of pretrained self-supervised representations"):
//!
//! `rank(Z) = exp(-sum_k p_k log p_k)`, `p_k = sigma_k / ||sigma||_1 + eps`, with `sigma_k` the
//! singular values of the `[n, d]` embedding matrix and `eps = 1e-7`. It lies in
//! `[1, min(n, d)]`: 1 for a collapsed embedding, `min(n, d)` when every direction carries the
//! same energy.

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// RankMe's epsilon.
const EPS: f64 = 1e-7;

/// The effective rank of `embeddings` (`[n, d]`, `n >= 1`).
pub fn effective_rank(embeddings: Tensor<2>) -> Result<f64> {
    let [n, d] = embeddings.dims();
    if n == 0 || d == 0 {
        return Err(Error::BatchTooSmall {
            context: "effective rank".into(),
            batch_size: n,
            minimum: 1,
        });
    }
    let values: Vec<f32> = embeddings
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::tensor_read("effective rank: embeddings", e))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            context: "effective rank: embeddings".into(),
        });
    }
    Ok(effective_rank_of(&values, n, d))
}

/// The effective rank of a row-major `[n, d]` matrix on the host.
pub fn effective_rank_of(values: &[f32], n: usize, d: usize) -> f64 {
    // Squared singular values are the eigenvalues of the smaller Gram matrix.
    let m = n.min(d);
    let mut gram = vec![0.0f64; m * m];
    for i in 0..m {
        for j in i..m {
            let mut s = 0.0f64;
            if d <= n {
                for r in 0..n {
                    s += f64::from(values[r * d + i]) * f64::from(values[r * d + j]);
                }
            } else {
                for c in 0..d {
                    s += f64::from(values[i * d + c]) * f64::from(values[j * d + c]);
                }
            }
            gram[i * m + j] = s;
            gram[j * m + i] = s;
        }
    }
    let singular: Vec<f64> = symmetric_eigenvalues(gram, m)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    let total: f64 = singular.iter().sum();
    if total <= 0.0 {
        return 1.0;
    }
    let entropy: f64 = singular
        .iter()
        .map(|s| {
            let p = s / total + EPS;
            -p * p.ln()
        })
        .sum();
    entropy.exp()
}

/// Eigenvalues of a symmetric `m x m` matrix by cyclic Jacobi rotations.
fn symmetric_eigenvalues(mut a: Vec<f64>, m: usize) -> Vec<f64> {
    let scale: f64 = a
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..60 {
        let off: f64 = (0..m)
            .flat_map(|i| (0..m).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * m + j] * a[i * m + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-13 * scale {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let (app, aqq) = (a[p * m + p], a[q * m + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..m).map(|i| a[i * m + i]).collect()
}
