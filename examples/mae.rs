//! MAE (He et al. 2022): a ViT encodes a quarter of each image's patches; a light decoder
//! reconstructs the other three quarters' pixels.
//!
//! `cargo run --release --example mae`

mod common;

use selfsup::method::{AnyMethodConfig, MaeConfig, Preset};

fn main() -> selfsup::Result<()> {
    // A one-block decoder keeps the example short (the paper's ablation: depth 1 still
    // fine-tunes well).
    let method = AnyMethodConfig::Mae(MaeConfig {
        decoder_depth: 1,
        decoder_dim: 128,
        decoder_heads: 4,
        ..MaeConfig::preset(Preset::Cifar)
    });
    let mut config = common::short_recipe(method, 2);
    config.backbone = common::small_vit();
    common::run(&config)
}
