//! Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' embeddings is
//! driven to the identity (invariance on the diagonal, redundancy reduction off it).
//!
//! `cargo run --release --example barlow_twins`

mod common;

use selfsup::method::{AnyMethodConfig, BarlowTwinsConfig};

fn main() -> selfsup::Result<()> {
    let method = AnyMethodConfig::BarlowTwins(BarlowTwinsConfig { lambda: 0.0051 });
    common::run(&common::short_recipe(method, 3))
}
