//! Gaussian blur (torchvision's `GaussianBlur`, the BYOL / SimCLR recipe): a separable kernel
//! with a random sigma and reflect padding.

use serde::{Deserialize, Serialize};

use super::rng::AugmentRng;
use super::view_image::ViewImage;
use crate::error::{Error, Result};
use crate::kernels::lanes::{VectorPass, run_widest};

/// Blur settings: probability, sigma range, and an optional fixed kernel size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianBlur {
    /// Probability of blurring a view.
    pub p: f64,
    /// Sigma is drawn uniformly from this range, in pixels (papers: `(0.1, 2.0)`).
    pub sigma: (f64, f64),
    /// Odd kernel size (torchvision's `kernel_size`, e.g. 23 for 224 pixels); `None` uses a
    /// radius of `ceil(3 sigma)`, a true Gaussian as PIL's `GaussianBlur(radius = sigma)`.
    pub kernel_size: Option<usize>,
}

impl GaussianBlur {
    /// Checks the probability, sigma range and kernel size.
    pub fn validate(&self, field: &str) -> Result<()> {
        super::check_probability(&format!("{field}.p"), self.p)?;
        if !(self.sigma.0 > 0.0 && self.sigma.0 <= self.sigma.1 && self.sigma.1.is_finite()) {
            return Err(Error::invalid_config(
                format!("{field}.sigma"),
                format!("{:?}", self.sigma),
                "0 < min <= max",
            ));
        }
        if let Some(k) = self.kernel_size
            && k % 2 == 0
        {
            return Err(Error::invalid_config(
                format!("{field}.kernel_size"),
                k,
                "an odd number",
            ));
        }
        Ok(())
    }

    /// Draws sigma for one view.
    pub fn draw_sigma(&self, rng: &mut AugmentRng) -> f32 {
        rng.uniform(self.sigma.0, self.sigma.1) as f32
    }

    /// Blurs `image` with the given sigma.
    pub fn apply(&self, image: &mut ViewImage, sigma: f32) {
        let radius = self
            .kernel_size
            .map_or_else(|| (3.0 * sigma).ceil() as usize, |k| k / 2);
        gaussian_blur(image, sigma, radius);
    }
}

/// Normalised 1-D Gaussian weights for offsets `-radius..=radius`.
fn kernel(sigma: f32, radius: usize) -> Vec<f32> {
    let r = radius as i64;
    let w: Vec<f32> = (-r..=r)
        .map(|x| (-0.5 * (x as f32 / sigma).powi(2)).exp())
        .collect();
    let total: f32 = w.iter().sum();
    w.into_iter().map(|v| v / total).collect()
}

/// Reflect padding (`dcb|abcd|cba`), as torchvision pads before the convolution.
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

/// Separable Gaussian blur of `image` with reflect padding; the radius is limited to the image.
///
/// Each pass is a sum of shifted whole rows (`out += k[t] * row[shifted by t]`), which the
/// compiler vectorises: horizontally on a reflect-padded copy of the interleaved row (a shift
/// of one pixel is three values), vertically on rows of the intermediate image.
pub fn gaussian_blur(image: &mut ViewImage, sigma: f32, radius: usize) {
    run_widest(Blur {
        image,
        sigma,
        radius,
    });
}

struct Blur<'a> {
    image: &'a mut ViewImage,
    sigma: f32,
    radius: usize,
}

impl VectorPass for Blur<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        blur_separably(self.image, self.sigma, self.radius);
    }
}

/// [`gaussian_blur`]: rows through a reflect-padded copy, then columns as sums of whole rows.
#[inline(always)]
fn blur_separably(image: &mut ViewImage, sigma: f32, radius: usize) {
    let (w, h) = (image.width, image.height);
    let radius = radius.min(w.max(h).saturating_sub(1));
    if radius == 0 {
        return;
    }
    let k = kernel(sigma, radius);
    let r = radius as i64;
    let row_len = w * 3;
    let mut padded = vec![0.0f32; (w + 2 * radius) * 3];
    let mut tmp = vec![0.0f32; image.data.len()];
    let columns: Vec<usize> = (0..w + 2 * radius)
        .map(|j| reflect(j as i64 - r, w))
        .collect();
    for (row, out) in image
        .data
        .chunks_exact(row_len)
        .zip(tmp.chunks_exact_mut(row_len))
    {
        for (dst, &x) in padded.chunks_exact_mut(3).zip(&columns) {
            dst.copy_from_slice(&row[x * 3..x * 3 + 3]);
        }
        weighted_row_sum(out, &k, |t| &padded[t * 3..t * 3 + row_len]);
    }
    for (y, out) in image.data.chunks_exact_mut(row_len).enumerate() {
        weighted_row_sum(out, &k, |t| {
            let sy = reflect(y as i64 + t as i64 - r, h);
            &tmp[sy * row_len..(sy + 1) * row_len]
        });
    }
}

/// `out = sum_t weights[t] * row(t)`.
#[inline(always)]
fn weighted_row_sum<'a>(out: &mut [f32], weights: &[f32], row: impl Fn(usize) -> &'a [f32]) {
    for (t, &weight) in weights.iter().enumerate() {
        let src = &row(t)[..out.len()];
        if t == 0 {
            for (o, &s) in out.iter_mut().zip(src) {
                *o = weight * s;
            }
        } else {
            for (o, &s) in out.iter_mut().zip(src) {
                *o += weight * s;
            }
        }
    }
}
