//! SimSiam (Chen & He 2021): no target network, no negatives; a predictor and a stop-gradient
//! on the other branch avoid collapse.
//!
//! `cargo run --release --example simsiam`

mod common;

fn main() -> selfsup::Result<()> {
    let mut config = common::short_recipe(common::method("simsiam"), 3);
    // SimSiam is stated per 256 images with SGD (lr 0.05 x batch / 256 in the paper).
    config.lr.base_lr = 0.06;
    common::run(&config)
}
