//! SwAV (Caron et al. 2020): online clustering; each view predicts the balanced
//! (Sinkhorn-Knopp) cluster assignment of the other, with multi-crop.
//!
//! `cargo run --release --example swav`

mod common;

use selfsup::augment::{Scale, ViewTransform};
use selfsup::method::{AnyMethodConfig, Preset, SwavConfig};

fn main() -> selfsup::Result<()> {
    let method = AnyMethodConfig::Swav(SwavConfig {
        num_prototypes: 100,
        freeze_prototypes_steps: 31,
        ..SwavConfig::preset(Preset::Cifar)
    });
    let mut config = common::short_recipe(method, 3);
    // Multi-crop: 2 global 32-pixel crops and 2 local 16-pixel crops.
    config.views = ViewTransform::swav(Scale::Cifar, 2);
    common::run(&config)
}
