//! DINO (Caron et al. 2021): a student matches the centred, sharpened output distribution of
//! its momentum teacher; the teacher sees the global crops, the student every crop.
//!
//! `cargo run --release --example dino`

mod common;

use selfsup::augment::{Scale, ViewTransform};
use selfsup::method::{AnyMethodConfig, DinoConfig, Preset};

fn main() -> selfsup::Result<()> {
    let method = AnyMethodConfig::Dino(DinoConfig {
        // A short run: reach the final teacher temperature within it.
        warmup_teacher_temperature_epochs: 2,
        ..DinoConfig::preset(Preset::Cifar)
    });
    let mut config = common::short_recipe(method, 3);
    // Multi-crop: 2 global 32-pixel crops (the teacher's) and 2 local 16-pixel crops.
    config.views = ViewTransform::dino(Scale::Cifar, 2);
    common::run(&config)
}
