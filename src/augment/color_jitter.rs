//! Colour jitter (torchvision's `ColorJitter`): brightness, contrast, saturation and hue
//! factors drawn uniformly, applied in a random order, each followed by clamping to `[0, 1]`.

use serde::{Deserialize, Serialize};

use super::rng::AugmentRng;
use super::view_image::{LUMA, ViewImage};
use crate::error::{Error, Result};

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
    /// Applies the drawn operations to `image`.
    pub fn apply(&self, image: &mut ViewImage) {
        for &(op, f) in &self.ops {
            match op {
                JitterOp::Brightness => adjust_brightness(image, f),
                JitterOp::Contrast => adjust_contrast(image, f),
                JitterOp::Saturation => adjust_saturation(image, f),
                JitterOp::Hue => adjust_hue(image, f),
            }
        }
    }
}

/// torchvision's `adjust_brightness`: `clamp(f * x)`.
pub fn adjust_brightness(image: &mut ViewImage, factor: f32) {
    for v in image.data.iter_mut() {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// torchvision's `adjust_contrast`: blend with the mean luma of the whole image.
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
pub fn adjust_hue(image: &mut ViewImage, shift: f32) {
    for px in image.data.chunks_exact_mut(3) {
        let (r, g, b) = (px[0], px[1], px[2]);
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let range = maxc - minc;
        if range == 0.0 {
            // Gray pixels have no hue; the round trip leaves them unchanged.
            continue;
        }
        let s = range / maxc;
        let rc = (maxc - r) / range;
        let gc = (maxc - g) / range;
        let bc = (maxc - b) / range;
        let h = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = (h / 6.0 + 1.0 + shift).rem_euclid(1.0);
        let v = maxc;
        let h6 = h * 6.0;
        let sector = h6.floor();
        let f = h6 - sector;
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        let (nr, ng, nb) = match (sector as i32).rem_euclid(6) {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
        px[0] = nr;
        px[1] = ng;
        px[2] = nb;
    }
}
