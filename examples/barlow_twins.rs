//! Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' embeddings is
//! driven to the identity (invariance on the diagonal, redundancy reduction off it).
//!
//! `cargo run --release --example barlow_twins`

mod common;

use selfsup::objective::{BarlowTwinsConfig, ObjectiveConfig};

fn main() -> selfsup::Result<()> {
    let objective = ObjectiveConfig::BarlowTwins(BarlowTwinsConfig::new().with_lambda(0.0051));
    common::run(&common::short_recipe(objective, 3))
}
