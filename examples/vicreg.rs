//! VICReg (Bardes et al. 2022): invariance (MSE between views), variance (a hinge on each
//! dimension's std) and covariance (off-diagonal terms pushed to 0).
//!
//! `cargo run --release --example vicreg`

mod common;

use selfsup::objective::{ObjectiveConfig, VicregConfig};

fn main() -> selfsup::Result<()> {
    let objective = ObjectiveConfig::Vicreg(
        VicregConfig::new()
            .with_lambda_invariance(25.0)
            .with_mu_variance(25.0)
            .with_nu_covariance(1.0),
    );
    common::run(&common::short_recipe(objective, 3))
}
