//! Colour jitter (torchvision's `ColorJitter`): brightness, contrast, saturation and hue
//! factors drawn uniformly, applied in a random order, each followed by clamping to `[0, 1]`.

use serde::{Deserialize, Serialize};

use super::rng::AugmentRng;
use super::view_image::{LUMA, ViewImage};
use crate::error::{Error, Result};
use crate::kernels::lanes::{VectorPass, run_widest};

/// Strengths of the four jitter operations, and the probability of applying the jitter at all
/// (the `RandomApply` wrapper of the papers' recipes).
///
/// Factors are drawn as torchvision does: brightness, contrast and saturation from
/// `[max(0, 1 - s), 1 + s]`, hue from `[-h, h]` (`h <= 0.5`). A strength of 0 skips that
/// operation, so all-zero strengths are the identity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    /// Probability of applying the jitter to a view.
    pub p: f64,
    /// Brightness strength.
    pub brightness: f64,
    /// Contrast strength.
    pub contrast: f64,
    /// Saturation strength.
    pub saturation: f64,
    /// Hue strength, at most 0.5.
    pub hue: f64,
}

/// The factors drawn for one view, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterDraw {
    /// `(operation, factor)` pairs in application order.
    pub ops: Vec<(JitterOp, f32)>,
}

/// One colour operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    /// `x * f`.
    Brightness,
    /// `f * x + (1 - f) * mean(luma)`.
    Contrast,
    /// `f * x + (1 - f) * luma(x)`.
    Saturation,
    /// Hue rotation by `f` turns in HSV space.
    Hue,
}

impl ColorJitter {
    /// Checks probabilities and strengths; `field` names the jitter in error messages.
    pub fn validate(&self, field: &str) -> Result<()> {
        super::check_probability(&format!("{field}.p"), self.p)?;
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid_config(
                    format!("{field}.{name}"),
                    v,
                    "a finite strength >= 0",
                ));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(Error::invalid_config(
                format!("{field}.hue"),
                self.hue,
                "a strength in [0, 0.5]",
            ));
        }
        Ok(())
    }

    /// Draws the order and the factors (torchvision's `ColorJitter.get_params`).
    pub fn draw(&self, rng: &mut AugmentRng) -> JitterDraw {
        let mut order = [
            JitterOp::Brightness,
            JitterOp::Contrast,
            JitterOp::Saturation,
            JitterOp::Hue,
        ];
        rng.shuffle(&mut order);
        let mut factor = |s: f64| rng.uniform((1.0 - s).max(0.0), 1.0 + s) as f32;
        let b = (self.brightness > 0.0).then(|| factor(self.brightness));
        let c = (self.contrast > 0.0).then(|| factor(self.contrast));
        let s = (self.saturation > 0.0).then(|| factor(self.saturation));
        let h = (self.hue > 0.0).then(|| rng.uniform(-self.hue, self.hue) as f32);
        let ops = order
            .into_iter()
            .filter_map(|op| {
                let f = match op {
                    JitterOp::Brightness => b,
                    JitterOp::Contrast => c,
                    JitterOp::Saturation => s,
                    JitterOp::Hue => h,
                };
                f.map(|f| (op, f))
            })
            .collect();
        JitterDraw { ops }
    }
}

impl JitterDraw {
    /// Applies the drawn operations to `image`, compiled for the widest vector instructions
    /// the CPU has (the operations have no fused multiply-adds, so every instruction set gives
    /// the same values).
    pub fn apply(&self, image: &mut ViewImage) {
        run_widest(JitterPass { draw: self, image });
    }
}

struct JitterPass<'a> {
    draw: &'a JitterDraw,
    image: &'a mut ViewImage,
}

impl VectorPass for JitterPass<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for &(op, f) in &self.draw.ops {
            match op {
                JitterOp::Brightness => adjust_brightness(self.image, f),
                JitterOp::Contrast => adjust_contrast(self.image, f),
                JitterOp::Saturation => adjust_saturation(self.image, f),
                JitterOp::Hue => adjust_hue(self.image, f),
            }
        }
    }
}

/// torchvision's `adjust_brightness`: `clamp(f * x)`.
#[inline(always)]
pub fn adjust_brightness(image: &mut ViewImage, factor: f32) {
    for v in image.data.iter_mut() {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// torchvision's `adjust_contrast`: blend with the mean luma of the whole image.
#[inline(always)]
pub fn adjust_contrast(image: &mut ViewImage, factor: f32) {
    let mut sum = 0.0f64;
    for px in image.data.chunks_exact(3) {
        sum += f64::from(LUMA[0] * px[0] + LUMA[1] * px[1] + LUMA[2] * px[2]);
    }
    let mean = (sum / (image.width * image.height).max(1) as f64) as f32;
    let offset = (1.0 - factor) * mean;
    for v in image.data.iter_mut() {
        *v = (factor * *v + offset).clamp(0.0, 1.0);
    }
}

/// torchvision's `adjust_saturation`: blend each pixel with its own luma.
#[inline(always)]
pub fn adjust_saturation(image: &mut ViewImage, factor: f32) {
    let keep = 1.0 - factor;
    for px in image.data.chunks_exact_mut(3) {
        let y = keep * (LUMA[0] * px[0] + LUMA[1] * px[1] + LUMA[2] * px[2]);
        for v in px.iter_mut() {
            *v = (factor * *v + y).clamp(0.0, 1.0);
        }
    }
}

/// torchvision's `adjust_hue`: rotate the hue by `shift` turns (`[-0.5, 0.5]`) in HSV space.
///
/// The HSV round trip is written without per-pixel branches (the sector of the hexcone
/// becomes `k = (n + 6h) mod 6` per channel, `c = v (1 - s clamp(min(k, 4 - k), 0, 1))`), on
/// blocks of pixels split into channel planes, so that the compiler vectorises it. Gray pixels
/// (`s = 0`) come back unchanged.
#[inline(always)]
pub fn adjust_hue(image: &mut ViewImage, shift: f32) {
    // Any whole number of turns is the identity; keeping the shift in [0, 1) keeps every
    // shifted hue in (0, 3), where subtracting the integer part takes two comparisons.
    let shift = shift - shift.floor();
    let mut blocks = image.data.chunks_exact_mut(3 * HUE_BLOCK);
    for block in &mut blocks {
        rotate_hue_block::<HUE_BLOCK>(block, shift);
    }
    for pixel in blocks.into_remainder().chunks_exact_mut(3) {
        rotate_hue_block::<1>(pixel, shift);
    }
}

/// Pixels per block of [`adjust_hue`]: three planes of this many values stay in registers / L1.
const HUE_BLOCK: usize = 64;

/// [`adjust_hue`] on `N` interleaved RGB pixels.
#[inline(always)]
fn rotate_hue_block<const N: usize>(pixels: &mut [f32], shift: f32) {
    let mut planes = [[0.0f32; N]; 3];
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planes[c][i] = px[c];
        }
    }
    let [r, g, b] = &mut planes;
    for i in 0..N {
        let (red, green, blue) = (r[i], g[i], b[i]);
        let v = red.max(green).max(blue);
        let range = v - red.min(green).min(blue);
        let s = if v > 0.0 { range / v } else { 0.0 };
        let inv_range = if range > 0.0 { 1.0 / range } else { 0.0 };
        let rc = (v - red) * inv_range;
        let gc = (v - green) * inv_range;
        let bc = (v - blue) * inv_range;
        let h = if v == red {
            bc - gc
        } else if v == green {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let turned = h / 6.0 + 1.0 + shift;
        let turned = turned - if turned >= 1.0 { 1.0 } else { 0.0 };
        let h6 = 6.0 * (turned - if turned >= 1.0 { 1.0 } else { 0.0 });
        let channel = |n: f32| {
            let k = n + h6;
            let k = k - if k >= 6.0 { 6.0 } else { 0.0 };
            (v * (1.0 - s * k.min(4.0 - k).clamp(0.0, 1.0))).clamp(0.0, 1.0)
        };
        r[i] = channel(5.0);
        g[i] = channel(3.0);
        b[i] = channel(1.0);
    }
    for (i, px) in pixels.chunks_exact_mut(3).enumerate() {
        for c in 0..3 {
            px[c] = planes[c][i];
        }
    }
}
