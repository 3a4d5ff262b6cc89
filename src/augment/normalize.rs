//! Per-channel normalisation (torchvision's `Normalize`) into the planar layout of a tensor.

use serde::{Deserialize, Serialize};

use super::view_image::ViewImage;
use crate::error::{Error, Result};

/// `(x - mean[c]) / std[c]` per channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Per-channel mean (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B), all > 0.
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics, the default of torchvision models, lightly and solo-learn (also
    /// used by lightly's CIFAR-10 benchmark).
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// CIFAR-10 training-set statistics (as solo-learn uses them for CIFAR).
    pub const CIFAR10: Self = Self {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.247, 0.2435, 0.2616],
    };

    /// No change: mean 0, std 1.
    pub const IDENTITY: Self = Self {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Checks that every std is positive and finite.
    pub fn validate(&self, field: &str) -> Result<()> {
        for (c, s) in self.std.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0) {
                return Err(Error::invalid_config(
                    format!("{field}.std[{c}]"),
                    s,
                    "a finite value > 0",
                ));
            }
        }
        Ok(())
    }

    /// Writes the normalised `image` into `out` as `[3, height, width]` (channel planes).
    pub fn write_planar(&self, image: &ViewImage, out: &mut [f32]) {
        let plane = image.width * image.height;
        debug_assert_eq!(out.len(), plane * 3);
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let scale = self.std.map(|s| 1.0 / s);
        for (i, px) in image.data.chunks_exact(3).enumerate() {
            r[i] = (px[0] - self.mean[0]) * scale[0];
            g[i] = (px[1] - self.mean[1]) * scale[1];
            b[i] = (px[2] - self.mean[2]) * scale[2];
        }
    }
}
