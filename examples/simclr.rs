//! SimCLR (Chen et al. 2020), the contrastive baseline: NT-Xent over the 2N views of a batch.
//!
//! `cargo run --release --example simclr`

mod common;

use selfsup::method::{AnyMethodConfig, SimClrConfig};

fn main() -> selfsup::Result<()> {
    let method = AnyMethodConfig::SimClr(SimClrConfig { temperature: 0.5 });
    common::run(&common::short_recipe(method, 3))
}
