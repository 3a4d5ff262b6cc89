//! Solarisation (torchvision's `RandomSolarize`, BYOL's second view): values at or above the
//! threshold are inverted, `x -> 1 - x`.

use super::view_image::ViewImage;

/// Inverts every channel value `>= threshold` (threshold in `[0, 1]`; 0.5 is PIL's 128).
pub fn solarize(image: &mut ViewImage, threshold: f32) {
    for v in image.data.iter_mut() {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}
