//! LeJEPA (Balestriero & LeCun 2025): no teacher, no stop-gradient, no predictor; every crop's
//! embedding is pulled to the mean of the global crops' while SIGReg keeps the embeddings an
//! isotropic Gaussian.
//!
//! `cargo run --release --example lejepa`

mod common;

use selfsup::augment::{Scale, ViewTransform};

fn main() -> selfsup::Result<()> {
    let mut config = common::short_recipe(common::method("lejepa"), 3);
    // Multi-crop: 2 global 32-pixel crops and 2 local 16-pixel crops.
    config.views = ViewTransform::dino(Scale::Cifar, 2);
    common::run(&config)
}
