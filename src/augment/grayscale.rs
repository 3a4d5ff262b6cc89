//! Random grayscale (torchvision's `RandomGrayscale`): the luma in all three channels.

use super::view_image::{LUMA, ViewImage};

/// Replaces every pixel by its ITU-R 601-2 luma, repeated in the three channels.
pub fn to_grayscale(image: &mut ViewImage) {
    for px in image.data.chunks_exact_mut(3) {
        let y = LUMA[0] * px[0] + LUMA[1] * px[1] + LUMA[2] * px[2];
        px.fill(y);
    }
}
