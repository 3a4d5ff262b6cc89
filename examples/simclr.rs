//! SimCLR (Chen et al. 2020), the contrastive baseline: NT-Xent over the 2N views of a batch.
//!
//! `cargo run --release --example simclr`

mod common;

use selfsup::objective::{NtXentConfig, ObjectiveConfig};

fn main() -> selfsup::Result<()> {
    let objective = ObjectiveConfig::NtXent(NtXentConfig::new().with_temperature(0.5));
    common::run(&common::short_recipe(objective, 3))
}
