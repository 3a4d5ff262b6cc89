//! Cropping and resampling: torchvision's `RandomResizedCrop` and `Resize` + `CenterCrop`.
//!
//! The crop box is drawn exactly as torchvision's `RandomResizedCrop.get_params` draws it (ten
//! tries of a log-uniform aspect ratio and a uniform area fraction, then a centre-crop
//! fallback), and the box is resized with an antialiased bilinear (triangle) filter whose
//! support widens when downscaling, as PIL and torchvision's `antialias=True` do.

use serde::{Deserialize, Serialize};

use super::rng::AugmentRng;
use super::view_image::ViewImage;
use crate::error::{Error, Result};
use crate::kernels::lanes::{VectorPass, run_widest};

/// How a view is cut out of the source image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Crop {
    /// torchvision's `RandomResizedCrop(size, scale, ratio)`: a box covering a uniform fraction
    /// `scale` of the image area, with a log-uniform aspect ratio in `ratio`, resized to
    /// `size x size`.
    RandomResized {
        /// Output side length in pixels.
        size: usize,
        /// Range of the box area as a fraction of the image area, e.g. `(0.08, 1.0)`.
        scale: (f64, f64),
        /// Range of the box aspect ratio (width / height), e.g. `(3/4, 4/3)`.
        ratio: (f64, f64),
    },
    /// torchvision's `Resize(resize)` then `CenterCrop(size)`: the deterministic evaluation
    /// view. With `resize = None` the centre `size x size` box is taken at full resolution.
    Center {
        /// Length of the shorter side after resizing, or `None` to keep the image's size.
        resize: Option<usize>,
        /// Output side length in pixels.
        size: usize,
    },
}

/// A crop box in source-image coordinates (possibly fractional for `Crop::Center`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// The largest view side a crop may ask for.
pub const MAX_SIDE: usize = 4096;

impl Crop {
    /// torchvision's default aspect-ratio range, `(3/4, 4/3)`.
    pub const DEFAULT_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

    /// The output side length.
    pub fn size(&self) -> usize {
        match self {
            Self::RandomResized { size, .. } | Self::Center { size, .. } => *size,
        }
    }

    /// Checks the parameters; `field` names the crop in error messages.
    pub fn validate(&self, field: &str) -> Result<()> {
        if !(1..=MAX_SIDE).contains(&self.size()) {
            return Err(Error::invalid_config(
                format!("{field}.size"),
                self.size(),
                format!("a side length in 1..={MAX_SIDE}"),
            ));
        }
        match self {
            Self::RandomResized { scale, ratio, .. } => {
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return Err(Error::invalid_config(
                        format!("{field}.scale"),
                        format!("{scale:?}"),
                        "0 < min <= max <= 1",
                    ));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return Err(Error::invalid_config(
                        format!("{field}.ratio"),
                        format!("{ratio:?}"),
                        "0 < min <= max",
                    ));
                }
            }
            Self::Center { resize, size } => {
                if let Some(r) = resize
                    && (r < size || *r > 4 * MAX_SIDE)
                {
                    return Err(Error::invalid_config(
                        format!("{field}.resize"),
                        r,
                        format!("between the crop size {size} and {}", 4 * MAX_SIDE),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Draws the crop box for a `width x height` image (torchvision's `get_params`).
    pub fn sample_box(&self, width: usize, height: usize, rng: &mut AugmentRng) -> CropBox {
        match *self {
            Self::RandomResized { scale, ratio, .. } => {
                random_resized_box(width, height, scale, ratio, rng)
            }
            Self::Center { resize, size } => {
                let short = width.min(height) as f64;
                // Resizing by `factor` then cropping `size` equals cropping `size / factor`.
                let factor = resize.map_or(1.0, |r| r as f64 / short);
                let (w, h) = (size as f64 / factor, size as f64 / factor);
                let (rw, rh) = (width as f64 * factor, height as f64 * factor);
                // torchvision rounds the resized size down and the offsets to the nearest pixel.
                let (rw, rh) = if resize.is_some() {
                    (rw.floor(), rh.floor())
                } else {
                    (rw, rh)
                };
                let left = ((rw - size as f64) / 2.0).round() / factor;
                let top = ((rh - size as f64) / 2.0).round() / factor;
                CropBox {
                    x: left,
                    y: top,
                    width: w,
                    height: h,
                }
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`, with integer box coordinates.
fn random_resized_box(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut AugmentRng,
) -> CropBox {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(log_lo, log_hi).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.below(height - h + 1);
            let left = rng.below(width - w + 1);
            return CropBox {
                x: left as f64,
                y: top as f64,
                width: w as f64,
                height: h as f64,
            };
        }
    }
    // Fallback: the largest centred box whose aspect ratio is inside `ratio`.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((width as f64 / ratio.0).round() as usize).max(1))
    } else if in_ratio > ratio.1 {
        (((height as f64 * ratio.1).round() as usize).max(1), height)
    } else {
        (width, height)
    };
    CropBox {
        x: ((width - w) / 2) as f64,
        y: ((height - h) / 2) as f64,
        width: w as f64,
        height: h as f64,
    }
}

/// Separable resampling weights along one axis: for each output pixel, the first input index
/// and the (normalised) weights of the consecutive input pixels it reads.
struct AxisFilter {
    starts: Vec<usize>,
    lens: Vec<usize>,
    weights: Vec<f32>,
}

impl AxisFilter {
    /// Triangle-filter weights mapping `[start, start + extent)` of an axis of `limit` pixels
    /// onto `out` pixels; the filter widens by the scale factor when downscaling (antialias).
    fn new(start: f64, extent: f64, limit: usize, out: usize) -> Self {
        let scale = extent / out as f64;
        let support = scale.max(1.0);
        let lo_bound = (start.floor().max(0.0) as usize).min(limit - 1);
        let hi_bound = ((start + extent).ceil() as usize).clamp(lo_bound + 1, limit);
        let mut starts = Vec::with_capacity(out);
        let mut lens = Vec::with_capacity(out);
        let mut weights = Vec::new();
        for o in 0..out {
            let center = start + (o as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(lo_bound as f64) as usize).min(hi_bound - 1);
            let hi = ((center + support).ceil() as usize).clamp(lo + 1, hi_bound);
            let first = weights.len();
            let mut total = 0.0f64;
            let mut taps: Vec<f64> = (lo..hi)
                .map(|i| {
                    let w = (1.0 - ((i as f64 + 0.5 - center) / support).abs()).max(0.0);
                    total += w;
                    w
                })
                .collect();
            // Trim zero-weight taps at both ends so the inner loops do no useless work.
            let mut begin = 0;
            while begin + 1 < taps.len() && taps[begin] == 0.0 {
                begin += 1;
            }
            while taps.len() > begin + 1 && *taps.last().unwrap_or(&1.0) == 0.0 {
                taps.pop();
            }
            if total <= 0.0 {
                // The box is narrower than one pixel: take the nearest pixel.
                taps = vec![1.0];
                begin = 0;
                total = 1.0;
            }
            weights.extend(taps[begin..].iter().map(|w| (w / total) as f32));
            starts.push(lo + begin);
            lens.push(weights.len() - first);
        }
        Self {
            starts,
            lens,
            weights,
        }
    }
}

/// Cuts `crop` out of an 8-bit RGB image and resamples it to `out x out` in `[0, 1]`, compiled
/// for the widest vector instructions the CPU has (no fused multiply-adds: the same values on
/// every instruction set).
pub fn resample(source: &image::RgbImage, crop: CropBox, out: usize) -> ViewImage {
    run_widest(Resample { source, crop, out })
}

struct Resample<'a> {
    source: &'a image::RgbImage,
    crop: CropBox,
    out: usize,
}

impl VectorPass for Resample<'_> {
    type Output = ViewImage;

    #[inline(always)]
    fn run(self) -> ViewImage {
        resample_separably(self.source, self.crop, self.out)
    }
}

/// [`resample`]: a horizontal pass over the source rows in use, then a vertical one.
#[inline(always)]
fn resample_separably(source: &image::RgbImage, crop: CropBox, out: usize) -> ViewImage {
    let (width, height) = (source.width() as usize, source.height() as usize);
    let fx = AxisFilter::new(crop.x, crop.width, width, out);
    let fy = AxisFilter::new(crop.y, crop.height, height, out);
    let raw = source.as_raw();
    // Rows of the source that the vertical pass reads.
    let row_lo = fy.starts.iter().copied().min().unwrap_or(0);
    let row_hi = fy
        .starts
        .iter()
        .zip(&fy.lens)
        .map(|(s, l)| s + l)
        .max()
        .unwrap_or(row_lo);
    // Horizontal pass: source rows -> `out` columns (f32, still 0..255). Each row's columns
    // in use are widened to f32 once, so the taps read floats (no per-tap conversion).
    let col_lo = fx.starts.iter().copied().min().unwrap_or(0);
    let col_hi = fx
        .starts
        .iter()
        .zip(&fx.lens)
        .map(|(s, l)| s + l)
        .max()
        .unwrap_or(col_lo);
    let mut wide = vec![0.0f32; (col_hi - col_lo) * 3];
    let mut rows = vec![0.0f32; (row_hi - row_lo) * out * 3];
    for (r, y) in (row_lo..row_hi).enumerate() {
        let src_row = &raw[(y * width + col_lo) * 3..(y * width + col_hi) * 3];
        for (w, &v) in wide.iter_mut().zip(src_row) {
            *w = f32::from(v);
        }
        let dst_row = &mut rows[r * out * 3..(r + 1) * out * 3];
        let mut offset = 0;
        for (o, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let (start, len) = (fx.starts[o] - col_lo, fx.lens[o]);
            let w = &fx.weights[offset..offset + len];
            offset += len;
            let taps = &wide[start * 3..(start + len) * 3];
            let mut acc = [0.0f32; 3];
            for (&wk, p) in w.iter().zip(taps.chunks_exact(3)) {
                acc[0] += wk * p[0];
                acc[1] += wk * p[1];
                acc[2] += wk * p[2];
            }
            dst.copy_from_slice(&acc);
        }
    }
    // Vertical pass: weighted sums of whole rows, then scaling to [0, 1].
    let row_len = out * 3;
    let mut data = vec![0.0f32; out * row_len];
    let mut offset = 0;
    for (o, dst) in data.chunks_exact_mut(row_len).enumerate() {
        let (start, len) = (fy.starts[o], fy.lens[o]);
        for k in 0..len {
            let wk = fy.weights[offset + k] / 255.0;
            let src = &rows[(start + k - row_lo) * row_len..(start + k - row_lo + 1) * row_len];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += wk * s;
            }
        }
        offset += len;
        for d in dst.iter_mut() {
            *d = d.clamp(0.0, 1.0);
        }
    }
    ViewImage {
        width: out,
        height: out,
        data,
    }
}
