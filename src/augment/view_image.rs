//! The working image of an augmentation chain: RGB, `f32` values in `[0, 1]`, interleaved.

/// An RGB image with `f32` channel values in `[0, 1]`, stored row-major with interleaved
/// channels (`data[(y * width + x) * 3 + c]`). Every augmentation after the crop works on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` values.
    pub data: Vec<f32>,
}

/// ITU-R 601-2 luma weights, as torchvision's `rgb_to_grayscale` uses them.
pub const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

impl ViewImage {
    /// An image filled with one colour.
    pub fn filled(width: usize, height: usize, rgb: [f32; 3]) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&rgb);
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Converts an 8-bit RGB image (values divided by 255).
    pub fn from_rgb8(image: &image::RgbImage) -> Self {
        Self {
            width: image.width() as usize,
            height: image.height() as usize,
            data: image
                .as_raw()
                .iter()
                .map(|&v| f32::from(v) / 255.0)
                .collect(),
        }
    }

    /// Converts back to 8-bit RGB, rounding to the nearest level.
    pub fn to_rgb8(&self) -> image::RgbImage {
        let raw = self
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        image::RgbImage::from_raw(self.width as u32, self.height as u32, raw)
            .expect("buffer length matches dimensions by construction")
    }

    /// The three channel values of pixel `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The mean of each channel.
    pub fn channel_means(&self) -> [f64; 3] {
        let mut sums = [0.0f64; 3];
        for px in self.data.chunks_exact(3) {
            for c in 0..3 {
                sums[c] += f64::from(px[c]);
            }
        }
        let n = (self.width * self.height).max(1) as f64;
        sums.map(|s| s / n)
    }
}
