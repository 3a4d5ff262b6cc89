//! I-JEPA (Assran et al. 2023): from one context block, a predictor predicts the momentum
//! target encoder's representations of four target blocks: prediction in representation
//! space, with masking as the pretext.
//!
//! `cargo run --release --example ijepa`

mod common;

use selfsup::method::{AnyMethodConfig, IjepaConfig, Preset};

fn main() -> selfsup::Result<()> {
    let method = AnyMethodConfig::Ijepa(IjepaConfig {
        predictor_depth: 2,
        ..IjepaConfig::preset(Preset::Cifar)
    });
    let mut config = common::short_recipe(method, 2);
    config.backbone = common::small_vit();
    common::run(&config)
}
