//! VICReg (Bardes et al. 2022): invariance (MSE between views), variance (a hinge on each
//! dimension's std) and covariance (off-diagonal terms pushed to 0).
//!
//! `cargo run --release --example vicreg`

mod common;

use selfsup::method::{AnyMethodConfig, VicregConfig};

fn main() -> selfsup::Result<()> {
    let method = AnyMethodConfig::Vicreg(VicregConfig {
        lambda_invariance: 25.0,
        mu_variance: 25.0,
        nu_covariance: 1.0,
        eps: 1e-4,
    });
    common::run(&common::short_recipe(method, 3))
}
