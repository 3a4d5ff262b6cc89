//! Patch masks for masked-image methods, drawn on the loader's worker threads with the views
//! and deterministic from the seed, the epoch and the batch's images.
//!
//! - [`Masking::Random`]: MAE's per-image random masking (He et al. 2022, `random_masking`): a
//!   random permutation of the `N` patches of the first view; the first `N (1 - ratio)` are
//!   kept (the encoder's input), the rest are masked (the loss's targets).
//! - [`Masking::MultiBlock`]: I-JEPA's multi-block masks (Assran et al. 2023,
//!   `MaskCollator`): `targets` rectangular target blocks of scale `target_scale` and aspect
//!   ratio `target_aspect`, and one context block of scale `context_scale` (aspect 1) with
//!   every target patch removed. One block size per batch, so every image of a batch has the
//!   same counts; sizes are drawn once per batch (one uniform number for a block's area and
//!   aspect, as the reference draws them), positions per image, and every image keeps as many
//!   context patches as the smallest context of its batch (the reference collator's
//!   truncation). A block may touch the last row and column; the reference's
//!   `randint(0, grid - h)` never places one there, which on CIFAR's 8 x 8 grid pins the
//!   7 x 7 context block to the top-left corner.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How patches are masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Masking {
    /// MAE's random masking of a fraction `ratio` of the patches of `patch_size` pixels.
    Random {
        /// Side of a patch (the encoder's).
        patch_size: usize,
        /// Fraction of masked patches (0.75).
        ratio: f64,
    },
    /// I-JEPA's multi-block masks on patches of `patch_size` pixels.
    MultiBlock {
        /// Side of a patch (the encoder's).
        patch_size: usize,
        /// Target blocks per image (4).
        targets: usize,
        /// Range of a target block's area as a fraction of the image (0.15, 0.2).
        target_scale: (f64, f64),
        /// Range of a target block's aspect ratio, height / width (0.75, 1.5).
        target_aspect: (f64, f64),
        /// Range of the context block's area (0.85, 1.0).
        context_scale: (f64, f64),
        /// Fewest patches a context may keep (10).
        min_context: usize,
    },
}

impl Masking {
    /// MAE's 75% random masking.
    pub fn mae(patch_size: usize) -> Self {
        Self::Random {
            patch_size,
            ratio: 0.75,
        }
    }

    /// I-JEPA's masks: 4 targets of scale 0.15-0.2 and aspect 0.75-1.5, a context of scale
    /// 0.85-1.0.
    pub fn ijepa(patch_size: usize) -> Self {
        Self::MultiBlock {
            patch_size,
            targets: 4,
            target_scale: (0.15, 0.2),
            target_aspect: (0.75, 1.5),
            context_scale: (0.85, 1.0),
            min_context: 10,
        }
    }

    /// Side of a patch.
    pub fn patch_size(&self) -> usize {
        match self {
            Self::Random { patch_size, .. } | Self::MultiBlock { patch_size, .. } => *patch_size,
        }
    }

    /// Checks the ranges, naming each field, for views of `view_size` pixels.
    pub fn validate(&self, view_size: usize) -> Result<()> {
        let p = self.patch_size();
        if p == 0 || !view_size.is_multiple_of(p) || view_size / p < 2 {
            return Err(Error::invalid_config(
                "views.masking.patch_size",
                p,
                format!("a divisor of the view size {view_size} giving at least 2 x 2 patches"),
            ));
        }
        let unit = |field: &str, (lo, hi): (f64, f64)| {
            let ok = lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 1.0;
            crate::check::ensure(field, lo, ok, "a range lo <= hi inside (0, 1]")
        };
        match self {
            Self::Random { ratio, .. } => crate::check::ensure(
                "views.masking.ratio",
                *ratio,
                (0.0..1.0).contains(ratio),
                "in [0, 1)",
            ),
            Self::MultiBlock {
                targets,
                target_scale,
                target_aspect,
                context_scale,
                ..
            } => {
                if !(1..=16).contains(targets) {
                    return Err(Error::invalid_config(
                        "views.masking.targets",
                        targets,
                        "in 1..=16",
                    ));
                }
                unit("views.masking.target_scale", *target_scale)?;
                unit("views.masking.context_scale", *context_scale)?;
                let (lo, hi) = *target_aspect;
                let ok = lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi;
                crate::check::ensure("views.masking.target_aspect", lo, ok, "0 < lo <= hi")
            }
        }
    }

    /// The masks of one batch of `batch` images whose first view has `view_size` pixels, from
    /// a stream seeded by `seed`, `epoch` and the batch's first image.
    pub fn draw(&self, view_size: usize, batch: usize, stream: [u64; 3]) -> HostMasks {
        let grid = view_size / self.patch_size();
        let mut rng = StdRng::seed_from_u64(mix(stream));
        match self {
            Self::Random { ratio, .. } => random_masks(grid, batch, *ratio, &mut rng),
            Self::MultiBlock {
                targets,
                target_scale,
                target_aspect,
                context_scale,
                min_context,
                ..
            } => {
                let shape = BlockShapes {
                    targets: *targets,
                    target_scale: *target_scale,
                    target_aspect: *target_aspect,
                    context_scale: *context_scale,
                    min_context: *min_context,
                };
                multi_block_masks(grid, batch, &shape, &mut rng)
            }
        }
    }
}

fn mix([a, b, c]: [u64; 3]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for v in [a, b, c] {
        h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
    h
}

/// The masks of one batch, row-major `[batch, count]` patch indices into the first view's
/// `grid x grid` patches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostMasks {
    /// Patches per side.
    pub grid: usize,
    /// The encoder's patches per image (MAE: the visible ones; I-JEPA: the context).
    pub keep: Vec<i64>,
    /// Patches per image in `keep`.
    pub keep_count: usize,
    /// The loss's patches: MAE, one set (the masked patches, `targets.len() == 1`); I-JEPA, one
    /// set per target block.
    pub targets: Vec<Vec<i64>>,
    /// Patches per image in each target set.
    pub target_count: usize,
    /// MAE: for each image, the position of every patch in `keep ++ masked` (the inverse of
    /// the shuffle, `ids_restore`); empty for I-JEPA.
    pub restore: Vec<i64>,
}

fn random_masks(grid: usize, batch: usize, ratio: f64, rng: &mut StdRng) -> HostMasks {
    let n = grid * grid;
    let keep_count = ((n as f64) * (1.0 - ratio)) as usize;
    let keep_count = keep_count.clamp(1, n - 1);
    let mut masks = HostMasks {
        grid,
        keep_count,
        target_count: n - keep_count,
        targets: vec![Vec::with_capacity(batch * (n - keep_count))],
        ..HostMasks::default()
    };
    for _ in 0..batch {
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(rng);
        let mut restore = vec![0i64; n];
        for (position, &patch) in order.iter().enumerate() {
            restore[patch as usize] = position as i64;
        }
        masks.keep.extend_from_slice(&order[..keep_count]);
        masks.targets[0].extend_from_slice(&order[keep_count..]);
        masks.restore.extend(restore);
    }
    masks
}

struct BlockShapes {
    targets: usize,
    target_scale: (f64, f64),
    target_aspect: (f64, f64),
    context_scale: (f64, f64),
    min_context: usize,
}

/// A block's `(height, width)` in patches, sized as the reference collator
/// (`_sample_block_size`) sizes it: one uniform draw `u` sets both the area fraction
/// `s = s_lo + u (s_hi - s_lo)` and the aspect ratio (height / width)
/// `a = a_lo + u (a_hi - a_lo)`, so larger blocks are also taller; the block covers
/// `k = floor(s grid^2)` patches with sides `round(sqrt(k a))` and `round(sqrt(k / a))`
/// (halves to even, as Python's `round`), each at most `grid - 1` (the reference's bound) and
/// at least 1.
fn block_size(
    grid: usize,
    scale: (f64, f64),
    aspect: (f64, f64),
    rng: &mut StdRng,
) -> (usize, usize) {
    let u = rng.random::<f64>();
    let s = scale.0 + u * (scale.1 - scale.0);
    let a = aspect.0 + u * (aspect.1 - aspect.0);
    let area = (s * (grid * grid) as f64).floor();
    let h = ((area * a).sqrt().round_ties_even() as usize).clamp(1, grid - 1);
    let w = ((area / a).sqrt().round_ties_even() as usize).clamp(1, grid - 1);
    (h, w)
}

/// The patches of an `h x w` block at a random position.
fn place_block(grid: usize, (h, w): (usize, usize), rng: &mut StdRng) -> Vec<usize> {
    let top = rng.random_range(0..=grid - h);
    let left = rng.random_range(0..=grid - w);
    (top..top + h)
        .flat_map(|r| (left..left + w).map(move |c| r * grid + c))
        .collect()
}

fn multi_block_masks(
    grid: usize,
    batch: usize,
    shape: &BlockShapes,
    rng: &mut StdRng,
) -> HostMasks {
    let target_size = block_size(grid, shape.target_scale, shape.target_aspect, rng);
    let context_size = block_size(grid, shape.context_scale, (1.0, 1.0), rng);
    let mut contexts: Vec<Vec<usize>> = Vec::with_capacity(batch);
    let mut targets: Vec<Vec<Vec<usize>>> = Vec::with_capacity(batch);
    for _ in 0..batch {
        // Redraw the positions until the context keeps enough patches. The official collator
        // redraws only the context (wanting more than `min_keep` patches) and after 20 tries lets
        // it overlap the targets; here the targets move too, and context and targets stay
        // disjoint.
        let mut tries = 0;
        let (blocks, context) = loop {
            let blocks: Vec<Vec<usize>> = (0..shape.targets)
                .map(|_| place_block(grid, target_size, rng))
                .collect();
            let mut covered = vec![false; grid * grid];
            blocks.iter().flatten().for_each(|&p| covered[p] = true);
            let context: Vec<usize> = place_block(grid, context_size, rng)
                .into_iter()
                .filter(|&p| !covered[p])
                .collect();
            tries += 1;
            if context.len() >= shape.min_context.min(grid * grid / 4).max(1) || tries >= 100 {
                break (blocks, context);
            }
        };
        contexts.push(context);
        targets.push(blocks);
    }
    let keep_count = contexts.iter().map(Vec::len).min().unwrap_or(0).max(1);
    let target_count = target_size.0 * target_size.1;
    let mut masks = HostMasks {
        grid,
        keep_count,
        target_count,
        targets: vec![Vec::with_capacity(batch * target_count); shape.targets],
        ..HostMasks::default()
    };
    for (context, blocks) in contexts.iter().zip(&targets) {
        // An empty context (only possible when the targets cover the context block after
        // every retry) keeps patch 0 so the encoder has an input.
        let kept = if context.is_empty() {
            &[0][..]
        } else {
            &context[..keep_count]
        };
        masks.keep.extend(kept.iter().map(|&p| p as i64));
        for (set, block) in masks.targets.iter_mut().zip(blocks) {
            set.extend(block.iter().map(|&p| p as i64));
        }
    }
    masks
}

/// The masks of one batch on the device, `[batch, count]` patch indices each.
#[derive(Debug, Clone)]
pub struct Masks {
    /// Patches per side of the first view.
    pub grid: usize,
    /// The encoder's patches (MAE: visible; I-JEPA: context).
    pub keep: Tensor<2, Int>,
    /// The loss's patches: MAE's masked patches, or one tensor per I-JEPA target block.
    pub targets: Vec<Tensor<2, Int>>,
    /// MAE's `ids_restore` `[batch, N]`: where each patch sits in `keep ++ masked`.
    pub restore: Option<Tensor<2, Int>>,
}

impl HostMasks {
    /// The masks of images `start..start + len` of the batch (a rank's share).
    pub fn rows(&self, start: usize, len: usize) -> HostMasks {
        let n = self.grid * self.grid;
        let take = |values: &[i64], per_image: usize| {
            values[start * per_image..(start + len) * per_image].to_vec()
        };
        HostMasks {
            grid: self.grid,
            keep: take(&self.keep, self.keep_count),
            keep_count: self.keep_count,
            targets: self
                .targets
                .iter()
                .map(|t| take(t, self.target_count))
                .collect(),
            target_count: self.target_count,
            restore: if self.restore.is_empty() {
                Vec::new()
            } else {
                take(&self.restore, n)
            },
        }
    }

    /// The masks of a batch of `batch` images on `device`.
    pub fn to_device(&self, batch: usize, device: &Device) -> Masks {
        let int = |values: &[i64], count: usize| {
            Tensor::<2, Int>::from_data(TensorData::new(values.to_vec(), [batch, count]), device)
        };
        let n = self.grid * self.grid;
        Masks {
            grid: self.grid,
            keep: int(&self.keep, self.keep_count),
            targets: self
                .targets
                .iter()
                .map(|t| int(t, self.target_count))
                .collect(),
            restore: (!self.restore.is_empty()).then(|| int(&self.restore, n)),
        }
    }
}
