//! MoCo v2 (He et al. 2020; Chen et al. 2020): contrastive learning against a queue of keys
//! from a momentum encoder, so the negatives outnumber the batch.
//!
//! `cargo run --release --example moco`

mod common;

use selfsup::method::{AnyMethodConfig, MocoConfig, Preset};

fn main() -> selfsup::Result<()> {
    // The CIFAR preset: momentum 0.99, 4,096 keys, temperature 0.2, symmetric loss.
    let method = AnyMethodConfig::Moco(MocoConfig {
        queue_length: 1024,
        ..MocoConfig::preset(Preset::Cifar)
    });
    common::run(&common::short_recipe(method, 3))
}
