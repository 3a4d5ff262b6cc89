//! Augmented views: each step of the papers' torchvision pipelines on decoded images, the
//! per-method presets, multi-crop, and the patch masks of masked-image methods.
//!
//! Every view is reproducible: view `v` of image `i` in epoch `e` draws its randomness from the
//! stream `[seed, e, i, v]` ([`AugmentRng::stream`]), whatever thread builds it.

pub mod blur;
pub mod color_jitter;
pub mod crop;
pub mod flip;
pub mod grayscale;
pub mod masking;
pub mod multi_view;
pub mod normalize;
pub mod presets;
pub mod recipe;
pub mod rng;
pub mod solarize;
pub mod view_image;

pub use blur::GaussianBlur;
pub use color_jitter::ColorJitter;
pub use crop::{Crop, CropBox};
pub use masking::{HostMasks, Masking, Masks};
pub use multi_view::{ViewGroup, ViewTransform};
pub use normalize::Normalize;
pub use presets::Scale;
pub use recipe::ViewRecipe;
pub use rng::AugmentRng;
pub use view_image::ViewImage;

use crate::error::{Error, Result};

/// Fails unless `p` is a probability.
pub(crate) fn check_probability(field: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::invalid_config(field, p, "a probability in [0, 1]"))
    }
}
