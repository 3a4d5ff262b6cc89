//! Spherical k-means on unit vectors, as DeepCluster-v2 clusters its memory bank
//! (facebookresearch/swav `main_deepclusterv2.py` `cluster_memory`; solo-learn
//! `solo/utils/kmeans.py`):
//!
//! 1. the initial centroids are `k` distinct points chosen with the seed by k-means++ seeding
//!    (Arthur & Vassilvitskii 2007: each next point drawn with probability proportional to its
//!    squared distance `2 - 2 cos` to the nearest centroid so far). The reference draws `k`
//!    uniformly random points instead; with its 3,000 clusters that rarely matters, but at a
//!    few clusters per class random points often start two centroids in one cluster, which
//!    the iterations never separate;
//! 2. `iterations` times: assign each point to the centroid of largest dot product, move each
//!    non-empty cluster's centroid to the mean of its points (an empty cluster keeps its
//!    centroid), L2-normalise every centroid;
//! 3. assign once more to the final centroids.
//!
//! The dot products run on the points' device in row blocks; the means are added on the host
//! in point order, so the result depends only on the points and the seed.

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Rows of points scored against the centroids at once (bounds the `[rows, k]` scores).
const ROW_BLOCK: usize = 4096;

/// The result of [`spherical_kmeans`].
#[derive(Debug, Clone)]
pub struct KMeans {
    /// Unit centroids `[k, D]`, on the points' device.
    pub centroids: Tensor<2>,
    /// The cluster of each point.
    pub assignments: Vec<usize>,
}

/// Spherical k-means of the rows of `points` (`[N, D]`, unit vectors) into `k` clusters; see
/// the [module docs](self).
pub fn spherical_kmeans(
    points: &Tensor<2>,
    k: usize,
    iterations: usize,
    seed: u64,
) -> Result<KMeans> {
    let [n, dim] = points.dims();
    if k == 0 || k > n {
        return Err(Error::invalid_config(
            "k-means clusters",
            k,
            format!("between 1 and the number of points ({n})"),
        ));
    }
    let points = points.clone().detach();
    let device = points.device();
    let host = read_f32(&points, "k-means points")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let first = plus_plus_seeds(&host, dim, k, &mut rng);
    let mut centroids: Vec<f32> = first
        .iter()
        .flat_map(|&i| host[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    let upload = |c: &[f32]| Tensor::<2>::from_data(TensorData::new(c.to_vec(), [k, dim]), &device);
    let mut assignments = assign(&points, upload(&centroids))?;
    for _ in 0..iterations {
        centroids = cluster_means(&host, dim, &assignments, centroids);
        assignments = assign(&points, upload(&centroids))?;
    }
    Ok(KMeans {
        centroids: upload(&centroids),
        assignments,
    })
}

/// `k` distinct point indices by k-means++ seeding on the unit sphere.
fn plus_plus_seeds(points: &[f32], dim: usize, k: usize, rng: &mut StdRng) -> Vec<usize> {
    let n = points.len() / dim;
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let squared_distance = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        f64::from(2.0 - 2.0 * dot).max(0.0)
    };
    let mut chosen = vec![rng.random_range(0..n)];
    let mut nearest: Vec<f64> = (0..n)
        .map(|i| squared_distance(row(i), row(chosen[0])))
        .collect();
    nearest[chosen[0]] = 0.0;
    while chosen.len() < k {
        let total: f64 = nearest.iter().sum();
        let next = if total > 0.0 {
            let mut target = rng.random_range(0.0..total);
            // Rounding can leave `target` past the last positive weight: take that one.
            let mut pick = nearest.iter().rposition(|d| *d > 0.0).unwrap_or(0);
            for (i, d) in nearest.iter().enumerate() {
                if target < *d {
                    pick = i;
                    break;
                }
                target -= d;
            }
            pick
        } else {
            // Every point coincides with a chosen one: take the first not yet chosen.
            (0..n).find(|i| !chosen.contains(i)).unwrap_or(0)
        };
        chosen.push(next);
        nearest[next] = 0.0;
        let centre = row(next);
        for (i, d) in nearest.iter_mut().enumerate() {
            if *d > 0.0 {
                *d = d.min(squared_distance(row(i), centre));
            }
        }
    }
    chosen
}

/// The centroid of largest dot product for every point.
fn assign(points: &Tensor<2>, centroids: Tensor<2>) -> Result<Vec<usize>> {
    let [n, _] = points.dims();
    let transposed = centroids.transpose();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(ROW_BLOCK) {
        let rows = ROW_BLOCK.min(n - start);
        let scores = points
            .clone()
            .narrow(0, start, rows)
            .matmul(transposed.clone());
        let best: Tensor<2, Int> = scores.argmax(1);
        let values = best
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| Error::tensor_read("k-means assignments", e))?;
        out.extend(values.into_iter().map(|v| v as usize));
    }
    Ok(out)
}

/// The mean of each non-empty cluster (others keep their centroid), every centroid
/// L2-normalised.
fn cluster_means(points: &[f32], dim: usize, assignments: &[usize], old: Vec<f32>) -> Vec<f32> {
    let k = old.len() / dim;
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (i, &c) in assignments.iter().enumerate() {
        counts[c] += 1;
        let row = &points[i * dim..(i + 1) * dim];
        for (s, &x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    let mut out = old;
    for c in 0..k {
        let centroid = &mut out[c * dim..(c + 1) * dim];
        if counts[c] > 0 {
            for (o, s) in centroid.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                *o = (s / counts[c] as f64) as f32;
            }
        }
        let norm = centroid
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for o in centroid.iter_mut() {
            *o = (f64::from(*o) / norm) as f32;
        }
    }
    out
}

/// The values of a float tensor as f32 on the host.
fn read_f32(t: &Tensor<2>, what: &str) -> Result<Vec<f32>> {
    crate::check::host_f32(t.clone(), what)
}
