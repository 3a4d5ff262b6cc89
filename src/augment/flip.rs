//! Random horizontal flip (torchvision's `RandomHorizontalFlip`).

use super::view_image::ViewImage;

/// Mirrors each row of `image` left to right.
pub fn flip_horizontal(image: &mut ViewImage) {
    let row_len = image.width * 3;
    for row in image.data.chunks_exact_mut(row_len) {
        let (mut left, mut right) = (0, image.width.saturating_sub(1));
        while left < right {
            for c in 0..3 {
                row.swap(left * 3 + c, right * 3 + c);
            }
            left += 1;
            right -= 1;
        }
    }
}
