//! SIGReg's Epps-Pulley kernel (`selfsup::kernels::sigreg`) against a float64 reference that
//! evaluates `cos(t_k x)` and `sin(t_k x)` at every knot directly (statistic and gradient, odd
//! shapes, a single sample, a single direction, bit-identical on one thread and on a rerun), and
//! `Sigreg::loss` on the kernel against burn's composition (`Sigreg::loss_with_tensor_ops`) on
//! the flex autodiff device, loss and gradients.
#![cfg(feature = "flex")]

use burn::tensor::{Device, Distribution, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfsup::kernels::sigreg::{
    EppsPulleyGrid, ProjectionShape, epps_pulley_backward, epps_pulley_forward,
};
use selfsup::method::Sigreg;

/// `|a - b| <= 1e-5 + 1e-4 |b|`, the fixtures' tolerance.
fn assert_close(context: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{context}: length");
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{context}[{i}]: {a} against {b}"
        );
    }
}

/// The statistic and `grad · ∂EP/∂x` in float64, one `cos` and `sin` per knot and value.
fn reference(
    shape: ProjectionShape,
    grid: &EppsPulleyGrid,
    x: &[f32],
    grad: f64,
) -> (f64, Vec<f64>) {
    let ProjectionShape {
        views,
        samples,
        directions,
    } = shape;
    let at = |v: usize, n: usize, m: usize| f64::from(x[(v * samples + n) * directions + m]);
    let mut statistic = 0.0;
    let mut dx = vec![0.0; x.len()];
    for v in 0..views {
        for m in 0..directions {
            for (k, &w) in grid.weights.iter().enumerate() {
                let t = k as f64 * grid.step;
                let phi = (-t * t / 2.0).exp();
                let c = (0..samples).map(|n| (t * at(v, n, m)).cos()).sum::<f64>() / samples as f64;
                let s = (0..samples).map(|n| (t * at(v, n, m)).sin()).sum::<f64>() / samples as f64;
                statistic += w * ((c - phi).powi(2) + s * s);
                let scale = grad * 2.0 / (views * directions) as f64 * w * t;
                for n in 0..samples {
                    let angle = t * at(v, n, m);
                    dx[(v * samples + n) * directions + m] +=
                        scale * (s * angle.cos() - (c - phi) * angle.sin());
                }
            }
        }
    }
    (statistic * samples as f64 / (views * directions) as f64, dx)
}

#[test]
fn the_kernel_matches_the_float64_reference_on_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(3);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (views, samples, directions, knots, t_max) in [
        (2, 64, 1024, 17, 3.0),
        (3, 7, 70, 17, 3.0),
        (1, 1, 1, 2, 1.0),
        (2, 5, 129, 9, 5.0),
        (4, 33, 64, 33, 3.0),
    ] {
        let shape = ProjectionShape {
            views,
            samples,
            directions,
        };
        let grid = EppsPulleyGrid::new(knots, t_max);
        // Projections of unit vectors on embeddings of norm up to a few: |x| up to about 8.
        let x: Vec<f32> = (0..views * samples * directions)
            .map(|_| rng.random_range(-8.0f32..8.0) * rng.random_range(0.0f32..1.0))
            .collect();
        let grad = 0.75;
        let (statistic, moments) = epps_pulley_forward(shape, &grid, &x);
        let dx = epps_pulley_backward(shape, &grid, &x, &moments, grad);
        let (expected, expected_dx) = reference(shape, &grid, &x, grad);
        let context = format!("{shape:?}, {knots} knots to {t_max}");
        assert!(
            (statistic - expected).abs() <= 1e-9 * (1.0 + expected.abs()),
            "{context}: {statistic} against {expected}"
        );
        assert_close(&context, &dx, &expected_dx);
        let again = one_thread.install(|| {
            let (statistic, moments) = epps_pulley_forward(shape, &grid, &x);
            (
                statistic,
                epps_pulley_backward(shape, &grid, &x, &moments, grad),
            )
        });
        assert_eq!((statistic, dx), again, "{context}: one thread");
    }
}

#[test]
fn sigreg_on_the_kernel_matches_burns_composition_with_gradients() {
    let device = Device::flex().autodiff();
    let sigreg = Sigreg {
        knots: 17,
        t_max: 3.0,
        num_vectors: 130,
    };
    for (views, samples, dim) in [(2, 16, 12), (3, 1, 5), (4, 9, 33)] {
        let values: Vec<Tensor<2>> = (0..views)
            .map(|v| {
                let spread = Distribution::Normal(0.0, 1.0 + v as f64 * 0.3);
                Tensor::<2>::random([samples, dim], spread, &Device::flex())
            })
            .collect();
        let unit_vectors = sigreg.unit_vectors(dim, 11, views, &device);
        let run = |composed: bool| {
            let z: Vec<Tensor<2>> = values
                .iter()
                .map(|z| Tensor::<2>::from_data(z.to_data(), &device).require_grad())
                .collect();
            let loss = if composed {
                sigreg.loss_with_tensor_ops(&z, unit_vectors.clone())
            } else {
                sigreg.loss(&z, unit_vectors.clone())
            }
            .unwrap();
            let grads = loss.backward();
            let mut out: Vec<f32> = loss.into_data().try_to_vec().unwrap();
            for z in &z {
                out.extend(
                    z.grad(&grads)
                        .unwrap()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap(),
                );
            }
            out
        };
        let (kernel, composed) = (run(false), run(true));
        let expected: Vec<f64> = composed.iter().map(|&v| v as f64).collect();
        let context = format!("{views} views of {samples} x {dim}");
        assert_close(&context, &kernel, &expected);
        assert!(
            kernel[0] > 0.0,
            "{context}: the statistic of random projections is positive"
        );
    }
}
