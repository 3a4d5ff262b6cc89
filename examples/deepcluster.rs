//! DeepCluster-v2 (Caron et al. 2020): k-means on a memory bank of projections at every epoch,
//! then each view predicts its image's clusters against the centroids.
//!
//! `cargo run --release --example deepcluster`

mod common;

use selfsup::method::{AnyMethodConfig, DeepClusterConfig, Preset};

fn main() -> selfsup::Result<()> {
    // Three clusterings of 100 for the 4,000 sample images.
    let method = AnyMethodConfig::DeepCluster(DeepClusterConfig {
        num_prototypes: vec![100; 3],
        ..DeepClusterConfig::preset(Preset::Cifar)
    });
    common::run(&common::short_recipe(method, 3))
}
