//! BYOL (Grill et al. 2020): an online network with a predictor regresses the output of an
//! EMA target network; the EMA decay goes from `ema.tau_base` to 1 with a cosine.
//!
//! `cargo run --release --example byol`

mod common;

use selfsup::augment::{Scale, ViewTransform};
use selfsup::train::EmaConfig;

fn main() -> selfsup::Result<()> {
    let mut config = common::short_recipe(common::method("byol"), 3);
    // The asymmetric pair: blur 1.0 / 0.1 (none at CIFAR scale), solarise 0 / 0.2.
    config.views = ViewTransform::byol(Scale::Cifar);
    config.ema = EmaConfig::to_one(0.99);
    common::run(&config)
}
