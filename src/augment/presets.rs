//! The papers' view recipes, as lightly implements them (`BYOLTransform`, `SimSiamTransform`,
//! `SimCLRTransform`, `VICRegTransform`, `SwaVTransform`, `DINOTransform`), at ImageNet scale
//! and at CIFAR scale (32 x 32, no blur, as lightly's CIFAR-10 benchmark uses).

use super::blur::GaussianBlur;
use super::color_jitter::ColorJitter;
use super::crop::Crop;
use super::multi_view::{ViewGroup, ViewTransform};
use super::normalize::Normalize;
use super::recipe::ViewRecipe;

/// The sigma range of every paper's blur.
const BLUR_SIGMA: (f64, f64) = (0.1, 2.0);

/// A random-resized-crop view with the common parts of the recipes.
#[allow(clippy::too_many_arguments)]
fn view(
    size: usize,
    scale: (f64, f64),
    jitter: [f64; 4],
    blur: f64,
    solarize: f64,
    with_blur: bool,
) -> ViewRecipe {
    ViewRecipe {
        crop: Crop::RandomResized {
            size,
            scale,
            ratio: Crop::DEFAULT_RATIO,
        },
        horizontal_flip: 0.5,
        color_jitter: Some(ColorJitter {
            p: 0.8,
            brightness: jitter[0],
            contrast: jitter[1],
            saturation: jitter[2],
            hue: jitter[3],
        }),
        grayscale: 0.2,
        blur: (with_blur && blur > 0.0).then_some(GaussianBlur {
            p: blur,
            sigma: BLUR_SIGMA,
            kernel_size: None,
        }),
        solarize,
        normalize: Normalize::IMAGENET,
        allow_upscaling: false,
    }
}

/// Image scale of a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// `size`-pixel views with the papers' blur (224 for ImageNet).
    Full(usize),
    /// 32 x 32 views without blur (lightly's CIFAR-10 benchmark).
    Cifar,
}

impl Scale {
    fn size(self) -> usize {
        match self {
            Self::Full(s) => s,
            Self::Cifar => 32,
        }
    }
    fn blur(self) -> bool {
        matches!(self, Self::Full(_))
    }
}

/// BYOL's colour jitter (Grill et al. 2020, table 6): brightness 0.4, contrast 0.4,
/// saturation 0.2, hue 0.1.
const BYOL_JITTER: [f64; 4] = [0.4, 0.4, 0.2, 0.1];
/// MoCo v2 / SimSiam colour jitter: 0.4, 0.4, 0.4, 0.1.
const MOCO_JITTER: [f64; 4] = [0.4, 0.4, 0.4, 0.1];
/// SimCLR / SwAV colour distortion at strength 1: 0.8, 0.8, 0.8, 0.2.
const SIMCLR_JITTER: [f64; 4] = [0.8, 0.8, 0.8, 0.2];

impl ViewTransform {
    /// BYOL's asymmetric pair (Grill et al. 2020): crop scale (0.08, 1); blur p 1.0 / 0.1;
    /// solarise p 0 / 0.2. Barlow Twins uses the same views.
    pub fn byol(scale: Scale) -> Self {
        let s = scale.size();
        Self::from_recipes([
            view(s, (0.08, 1.0), BYOL_JITTER, 1.0, 0.0, scale.blur()),
            view(s, (0.08, 1.0), BYOL_JITTER, 0.1, 0.2, scale.blur()),
        ])
    }

    /// Barlow Twins' views (Zbontar et al. 2021): BYOL's asymmetric pair.
    pub fn barlow_twins(scale: Scale) -> Self {
        Self::byol(scale)
    }

    /// SimSiam / MoCo v2 views (Chen & He 2021): crop scale (0.2, 1), jitter (0.4, 0.4, 0.4,
    /// 0.1), blur p 0.5, both views alike.
    pub fn simsiam(scale: Scale) -> Self {
        let s = scale.size();
        let v = view(s, (0.2, 1.0), MOCO_JITTER, 0.5, 0.0, scale.blur());
        Self::from_recipes([v.clone(), v])
    }

    /// SimCLR views (Chen et al. 2020): crop scale (0.08, 1), colour distortion strength 1
    /// (0.8, 0.8, 0.8, 0.2), blur p 0.5.
    pub fn simclr(scale: Scale) -> Self {
        let s = scale.size();
        let v = view(s, (0.08, 1.0), SIMCLR_JITTER, 0.5, 0.0, scale.blur());
        Self::from_recipes([v.clone(), v])
    }

    /// VICReg views (Bardes et al. 2022): BYOL's jitter, blur p 0.5, solarise p 0.1.
    pub fn vicreg(scale: Scale) -> Self {
        let s = scale.size();
        let v = view(s, (0.08, 1.0), BYOL_JITTER, 0.5, 0.1, scale.blur());
        Self::from_recipes([v.clone(), v])
    }

    /// SwAV multi-crop (Caron et al. 2020): 2 global crops, scale (0.14, 1), and `num_local`
    /// local crops, scale (0.05, 0.14); 224 / 96 pixels, or 32 / 16 at CIFAR scale (with no
    /// local crops this is lightly's CIFAR-10 recipe). Colour distortion (0.8, 0.8, 0.8, 0.2),
    /// blur p 0.5.
    pub fn swav(scale: Scale, num_local: usize) -> Self {
        let (g, l) = match scale {
            Scale::Full(s) => (s, s * 96 / 224),
            Scale::Cifar => (32, 16),
        };
        let global = view(g, (0.14, 1.0), SIMCLR_JITTER, 0.5, 0.0, scale.blur());
        let local = view(l, (0.05, 0.14), SIMCLR_JITTER, 0.5, 0.0, scale.blur());
        Self::multi_crop(vec![(global, 2)], local, num_local)
    }

    /// DINO multi-crop (Caron et al. 2021): global crops, scale (0.4, 1), blur p 1.0 and
    /// 0.1 (the second also solarised with p 0.2); `num_local` local crops, scale (0.05, 0.4),
    /// blur p 0.5; BYOL's jitter.
    pub fn dino(scale: Scale, num_local: usize) -> Self {
        let (g, l) = match scale {
            Scale::Full(s) => (s, s * 96 / 224),
            Scale::Cifar => (32, 16),
        };
        let g1 = view(g, (0.4, 1.0), BYOL_JITTER, 1.0, 0.0, scale.blur());
        let g2 = view(g, (0.4, 1.0), BYOL_JITTER, 0.1, 0.2, scale.blur());
        let local = view(l, (0.05, 0.4), BYOL_JITTER, 0.5, 0.0, scale.blur());
        Self::multi_crop(vec![(g1, 1), (g2, 1)], local, num_local)
    }

    /// MAE's (He et al. 2022) and I-JEPA's single view: a random resized crop of scale
    /// `scale` and a horizontal flip, no colour distortion; 224 pixels, or 32 at CIFAR
    /// scale. Add the masks with [`ViewTransform::with_masking`].
    pub fn masked_image(scale: Scale, crop_scale: (f64, f64)) -> Self {
        let size = match scale {
            Scale::Full(s) => s,
            Scale::Cifar => 32,
        };
        Self::from_recipes([ViewRecipe::crop_and_flip(size, crop_scale)])
    }

    /// The deterministic evaluation view: resize the shorter side to `resize` (if given),
    /// centre-crop `size`, normalise with ImageNet statistics.
    pub fn eval(resize: Option<usize>, size: usize) -> Self {
        Self::from_recipes([ViewRecipe::eval(resize, size, Normalize::IMAGENET)])
    }

    fn multi_crop(globals: Vec<(ViewRecipe, usize)>, local: ViewRecipe, num_local: usize) -> Self {
        let mut groups: Vec<ViewGroup> = globals
            .into_iter()
            .map(|(recipe, count)| ViewGroup {
                recipe,
                count,
                global: true,
            })
            .collect();
        if num_local > 0 {
            groups.push(ViewGroup {
                recipe: local,
                count: num_local,
                global: false,
            });
        }
        Self {
            groups,
            masking: None,
        }
    }
}
