//! Several views of one image: the BYOL pair, or SwAV / DINO multi-crop (global crops first,
//! then local crops at their own sizes).

use serde::{Deserialize, Serialize};

use super::masking::Masking;
use super::recipe::ViewRecipe;
use super::rng::AugmentRng;
use crate::error::{Error, Result};

/// `count` views drawn from one recipe; `global` marks the large crops that every view is
/// compared with (multi-crop objectives compare local crops with global ones only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewGroup {
    /// The augmentation chain of these views.
    pub recipe: ViewRecipe,
    /// How many views to draw.
    pub count: usize,
    /// Whether these are global views (they must come before local ones).
    pub global: bool,
}

/// The views produced from each image, in order: every global group, then the local groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewTransform {
    /// The view groups, global groups first.
    pub groups: Vec<ViewGroup>,
    /// Patch masks drawn with each batch (MAE, I-JEPA), on the first view's patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<Masking>,
}

impl ViewTransform {
    /// One global group per recipe (e.g. BYOL's two asymmetric views).
    pub fn from_recipes(recipes: impl IntoIterator<Item = ViewRecipe>) -> Self {
        Self {
            groups: recipes
                .into_iter()
                .map(|recipe| ViewGroup {
                    recipe,
                    count: 1,
                    global: true,
                })
                .collect(),
            masking: None,
        }
    }

    /// The same views with `masking` drawn with every batch.
    pub fn with_masking(self, masking: Masking) -> Self {
        Self {
            masking: Some(masking),
            ..self
        }
    }

    /// The recipe of every view, in output order.
    pub fn recipes(&self) -> impl Iterator<Item = &ViewRecipe> {
        self.groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(&g.recipe, g.count))
    }

    /// Total number of views per image.
    pub fn num_views(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Number of leading global views.
    pub fn num_global(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| g.global)
            .map(|g| g.count)
            .sum()
    }

    /// Side length of every view, in output order.
    pub fn view_sizes(&self) -> Vec<usize> {
        self.recipes().map(ViewRecipe::size).collect()
    }

    /// Checks every group: at least one view, global groups first, valid recipes.
    pub fn validate(&self) -> Result<()> {
        if self.num_views() == 0 {
            return Err(Error::invalid_config(
                "views",
                "no views",
                "at least one view group with count >= 1",
            ));
        }
        let mut seen_local = false;
        for (i, g) in self.groups.iter().enumerate() {
            if !(1..=64).contains(&g.count) {
                return Err(Error::invalid_config(
                    format!("views.groups[{i}].count"),
                    g.count,
                    "in 1..=64",
                ));
            }
            if g.global && seen_local {
                return Err(Error::invalid_config(
                    format!("views.groups[{i}].global"),
                    true,
                    "global groups before every local group",
                ));
            }
            seen_local |= !g.global;
            g.recipe.validate(&format!("views.groups[{i}]"))?;
        }
        if self.num_global() == 0 {
            return Err(Error::invalid_config(
                "views",
                "only local views",
                "at least one global view group",
            ));
        }
        match &self.masking {
            Some(masking) => masking.validate(self.view_sizes()[0]),
            None => Ok(()),
        }
    }

    /// Fails if a `width x height` image is too small for any view.
    pub fn check_source_size(
        &self,
        width: u32,
        height: u32,
        source: impl Fn() -> String,
    ) -> Result<()> {
        for g in &self.groups {
            g.recipe.check_source_size(width, height, &source)?;
        }
        Ok(())
    }

    /// Writes every view of `image` into `outputs` (one `[3, s, s]` buffer per view). View `v`
    /// draws from the stream `[seed, epoch, index, v]`, so the result depends only on these
    /// numbers, not on threads or batch composition.
    pub fn apply(
        &self,
        image: &image::RgbImage,
        key: [u64; 3],
        outputs: &mut [&mut [f32]],
    ) -> Result<()> {
        if outputs.len() != self.num_views() {
            return Err(Error::ShapeMismatch {
                context: "view buffers".into(),
                expected: vec![self.num_views()],
                found: vec![outputs.len()],
            });
        }
        for (v, (recipe, out)) in self.recipes().zip(outputs.iter_mut()).enumerate() {
            let mut rng = AugmentRng::stream(&[key[0], key[1], key[2], v as u64]);
            recipe.apply(image, &mut rng, out)?;
        }
        Ok(())
    }
}
