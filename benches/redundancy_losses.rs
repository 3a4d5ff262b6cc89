//! The redundancy-reduction losses on their own: VICReg's and Barlow Twins' loss of two
//! `[N, D]` embedding batches, forward and backward, with the `D x D` product of the reference
//! code (`features`) and through the batch's `N x N` Gram matrices (`batch`,
//! `selfsup::method::gram`; VICReg takes it when `2N <= D`, Barlow Twins when `2N < D`). Side
//! by side with `benches/reference/redundancy_losses_torch.py` (the reference code's `D x D`
//! formulas).
//!
//! ```text
//! cargo bench --bench redundancy_losses
//! SELFSUP_BENCH_SHAPES=128x8192 cargo bench --bench redundancy_losses
//! ```
//!
//! Environment: `SELFSUP_BENCH_SHAPES` (comma-separated `NxD`, default `256x2048,128x8192`:
//! the CIFAR-10 benchmark's heads at batch 256 and the papers' heads at batch 128),
//! `SELFSUP_BENCH_REPS` (timed repetitions, default 7, at least 1, after one untimed). Prints
//! the median milliseconds per forward + backward.

mod common;

use common::{median_ms, repetitions};

use burn::tensor::{Distribution, Tensor};
use selfsup::method::Vicreg;
use selfsup::method::barlow_twins::{BARLOW_TWINS_LAMBDA, barlow_twins_loss_through};
use selfsup::method::gram::ProductSide;
use selfsup::prelude::*;

fn shapes() -> Vec<(usize, usize)> {
    let text = std::env::var("SELFSUP_BENCH_SHAPES").unwrap_or_else(|_| "256x2048,128x8192".into());
    text.split(',')
        .map(|s| {
            let (n, d) = s.split_once('x').expect("SELFSUP_BENCH_SHAPES: NxD");
            (n.parse().expect("N"), d.parse().expect("D"))
        })
        .collect()
}

/// VICReg's pair loss (25, 25, 1, eps 1e-4) with its covariance through `side`.
fn vicreg(z1: Tensor<2>, z2: Tensor<2>, side: ProductSide) -> Tensor<1> {
    let vicreg = Vicreg {
        lambda_invariance: 25.0,
        mu_variance: 25.0,
        nu_covariance: 1.0,
        eps: 1e-4,
    };
    vicreg.pair_loss_through(z1, z2, side).expect("VICReg loss")
}

/// Barlow Twins' loss (lambda 0.0051) with its off-diagonal sum through `side`.
fn barlow(z1: Tensor<2>, z2: Tensor<2>, side: ProductSide) -> Tensor<1> {
    barlow_twins_loss_through(z1, z2, BARLOW_TWINS_LAMBDA, side).expect("Barlow Twins loss")
}

fn main() {
    let reps = repetitions(7);
    let device = Device::flex().autodiff();
    println!(
        "selfsup redundancy losses, forward + backward, {} threads",
        rayon::current_num_threads()
    );
    for (n, d) in shapes() {
        let input =
            || Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let (z1, z2) = (input(), input());
        for (method, loss) in [("vicreg", vicreg as fn(_, _, _) -> _), ("barlow", barlow)] {
            for (name, side) in [
                ("features", ProductSide::Features),
                ("batch", ProductSide::Batch),
            ] {
                let ms = median_ms(reps, || {
                    let grads = loss(z1.clone(), z2.clone(), side).backward();
                    let _ = z1.grad(&grads).unwrap().into_data();
                });
                println!("{method} {n}x{d} {name}: median {ms:.1} ms");
            }
        }
    }
}
