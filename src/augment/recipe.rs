//! One view's augmentation chain, in the order of the papers' torchvision pipelines:
//! crop -> horizontal flip -> colour jitter -> grayscale -> Gaussian blur -> solarise ->
//! normalise.

use serde::{Deserialize, Serialize};

use super::blur::GaussianBlur;
use super::color_jitter::ColorJitter;
use super::crop::{Crop, resample};
use super::flip::flip_horizontal;
use super::grayscale::to_grayscale;
use super::normalize::Normalize;
use super::rng::AugmentRng;
use super::solarize::solarize;
use crate::error::{Error, Result};

/// Solarisation threshold in `[0, 1]` (PIL's 128 of 255, as BYOL's reference code uses).
pub const SOLARIZE_THRESHOLD: f32 = 0.5;

/// The augmentation chain of one view, each step with its probability and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewRecipe {
    /// How the view is cut from the image and at what size.
    pub crop: Crop,
    /// Probability of a horizontal flip.
    pub horizontal_flip: f64,
    /// Colour jitter (with its own probability), or none.
    pub color_jitter: Option<ColorJitter>,
    /// Probability of converting to grayscale.
    pub grayscale: f64,
    /// Gaussian blur (with its own probability), or none.
    pub blur: Option<GaussianBlur>,
    /// Probability of solarising (threshold [`SOLARIZE_THRESHOLD`]).
    pub solarize: f64,
    /// Final per-channel normalisation.
    pub normalize: Normalize,
    /// Allow cutting a view larger than the source image (upsampling). Off by default, so that
    /// a preset for the wrong image size is an error instead of silently upsampled views.
    pub allow_upscaling: bool,
}

impl ViewRecipe {
    /// The deterministic evaluation view: `Resize(resize)`, `CenterCrop(size)`, normalise.
    pub fn eval(resize: Option<usize>, size: usize, normalize: Normalize) -> Self {
        Self {
            crop: Crop::Center { resize, size },
            horizontal_flip: 0.0,
            color_jitter: None,
            grayscale: 0.0,
            blur: None,
            solarize: 0.0,
            normalize,
            allow_upscaling: false,
        }
    }

    /// A random resized crop of `size` pixels at area `scale` with a horizontal flip (p 0.5),
    /// no colour distortion, ImageNet normalisation: MAE's and I-JEPA's view, and
    /// fine-tuning's default augmentation.
    pub fn crop_and_flip(size: usize, scale: (f64, f64)) -> Self {
        Self {
            crop: Crop::RandomResized {
                size,
                scale,
                ratio: Crop::DEFAULT_RATIO,
            },
            horizontal_flip: 0.5,
            color_jitter: None,
            grayscale: 0.0,
            blur: None,
            solarize: 0.0,
            normalize: Normalize::IMAGENET,
            allow_upscaling: false,
        }
    }

    /// The view's side length.
    pub fn size(&self) -> usize {
        self.crop.size()
    }

    /// Checks every parameter; `field` names the recipe in error messages.
    pub fn validate(&self, field: &str) -> Result<()> {
        self.crop.validate(&format!("{field}.crop"))?;
        super::check_probability(&format!("{field}.horizontal_flip"), self.horizontal_flip)?;
        super::check_probability(&format!("{field}.grayscale"), self.grayscale)?;
        super::check_probability(&format!("{field}.solarize"), self.solarize)?;
        if let Some(j) = &self.color_jitter {
            j.validate(&format!("{field}.color_jitter"))?;
        }
        if let Some(b) = &self.blur {
            b.validate(&format!("{field}.blur"))?;
        }
        self.normalize.validate(&format!("{field}.normalize"))
    }

    /// Fails if a `width x height` image is too small for this view (see
    /// [`allow_upscaling`](Self::allow_upscaling)); `source` names the image in the error.
    pub fn check_source_size(
        &self,
        width: u32,
        height: u32,
        source: impl FnOnce() -> String,
    ) -> Result<()> {
        let required = match self.crop {
            // Resizing first makes any image large enough.
            Crop::Center {
                resize: Some(_), ..
            } => 1,
            _ if self.allow_upscaling => 1,
            _ => self.size(),
        };
        if (width as usize) < required || (height as usize) < required || width == 0 || height == 0
        {
            return Err(Error::ImageTooSmall {
                source_name: source(),
                width,
                height,
                required: self.size(),
            });
        }
        Ok(())
    }

    /// Produces the view of `image` drawn from `rng`, normalised, as `[3, size, size]` planes
    /// written into `out` (length `3 * size * size`).
    pub fn apply(
        &self,
        image: &image::RgbImage,
        rng: &mut AugmentRng,
        out: &mut [f32],
    ) -> Result<()> {
        let size = self.size();
        if out.len() != 3 * size * size {
            return Err(Error::ShapeMismatch {
                context: "view buffer".into(),
                expected: vec![3, size, size],
                found: vec![out.len()],
            });
        }
        let crop = self
            .crop
            .sample_box(image.width() as usize, image.height() as usize, rng);
        let mut view = resample(image, crop, size);
        if rng.chance(self.horizontal_flip) {
            flip_horizontal(&mut view);
        }
        if let Some(jitter) = &self.color_jitter
            && rng.chance(jitter.p)
        {
            jitter.draw(rng).apply(&mut view);
        }
        if rng.chance(self.grayscale) {
            to_grayscale(&mut view);
        }
        if let Some(blur) = &self.blur
            && rng.chance(blur.p)
        {
            let sigma = blur.draw_sigma(rng);
            blur.apply(&mut view, sigma);
        }
        if rng.chance(self.solarize) {
            solarize(&mut view, SOLARIZE_THRESHOLD);
        }
        self.normalize.write_planar(&view, out);
        Ok(())
    }
}
