//! DeepCluster-v2 (Caron et al., "Unsupervised Learning of Visual Features by Contrasting
//! Cluster Assignments", NeurIPS 2020, arXiv:2006.09882, appendix; reference code:
//! facebookresearch/swav `main_deepclusterv2.py`, solo-learn `deepclusterv2`).
//!
//! A memory bank keeps the latest L2-normalised projection of every training image, one bank
//! per global crop. At the start of every epoch, each of `H` heads clusters a bank with
//! [spherical k-means](super::kmeans) (head `h` uses the bank of global crop `h mod G`), and
//! its prototypes become the centroids: they get no gradient. The loss is the cross-entropy of
//! every crop's prototype scores to its image's cluster, averaged over heads and crops:
//!
//! `L = (1 / (H V)) sum_h sum_v mean_b -log softmax(z_v . C_h^T / T)_{a_h(b)}`, `T = 0.1`,
//!
//! with `z_v` the normalised projection of crop `v` and `a_h(b)` image `b`'s cluster in head
//! `h`. After each step the batch's global-crop projections overwrite their bank rows. As in
//! the SwAV repository, a pass over the data before training fills the banks, so the first
//! epoch already has clusters (solo-learn instead skips the loss during the first epoch).
//!
//! Recipes: CIFAR, solo-learn's (LARS eta 0.02, lr 0.6 x batch / 256 to 0.0006, weight decay
//! 1e-6) with 3 x 1,000 prototypes for the 45,000-50,000 images; ImageNet, the paper's (LARS
//! eta 1e-3, lr 0.3 x batch / 256 with 10 warmup epochs to 0.0003, weight decay 1e-6,
//! 3 x 3,000 prototypes, 2 x 224 + 6 x 96 crops).

use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::kmeans::spherical_kmeans;
use super::{
    Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, at_least_one, at_most, buffer, positive, require_views, scaled,
    set_buffer,
};
use crate::augment::ViewTransform;
use crate::energy::l2_normalize;
use crate::error::{Error, Result};
use crate::model::ProjectionHeadConfig;
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// DeepCluster-v2's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepClusterConfig {
    /// Clusters of each head (the paper: three heads of 3,000).
    pub num_prototypes: Vec<usize>,
    /// Softmax temperature `T` (0.1).
    pub temperature: f64,
    /// k-means iterations per epoch (10).
    pub kmeans_iterations: usize,
    /// Output dimension of the projector (128).
    pub projection_dim: usize,
}

impl DeepClusterConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let clusters = match preset {
            Preset::Cifar => 1000,
            Preset::Imagenet => 3000,
        };
        Self {
            num_prototypes: vec![clusters; 3],
            temperature: 0.1,
            kmeans_iterations: 10,
            projection_dim: 128,
        }
    }
}

impl MethodConfig for DeepClusterConfig {
    type Method = DeepCluster;

    fn name(&self) -> &'static str {
        "DeepCluster-v2"
    }

    fn validate(&self) -> Result<()> {
        positive(&[("method.temperature", self.temperature)])?;
        at_least_one(&[
            ("method.num_prototypes (heads)", self.num_prototypes.len()),
            ("method.projection_dim", self.projection_dim),
        ])?;
        for (h, &k) in self.num_prototypes.iter().enumerate() {
            at_least_one(&[(&format!("method.num_prototypes[{h}]"), k)])?;
        }
        at_most(&[
            ("method.kmeans_iterations", self.kmeans_iterations, 1000),
            (
                "method.num_prototypes (heads)",
                self.num_prototypes.len(),
                64,
            ),
        ])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::swav_projector(
                feature_dim,
                scaled(2048, width),
                scaled(self.projection_dim, width),
            ),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let scale = context.preset.scale();
        match context.preset {
            Preset::Cifar => Recipe {
                views: ViewTransform::swav(scale, context.local_crops.unwrap_or(0)),
                optimizer: OptimizerConfig::lars(0.02, 1e-6),
                lr: LrConfig::per_256(0.6).with_final_lr(0.0006),
                ema: EmaConfig::to_one(0.99),
            },
            Preset::Imagenet => Recipe {
                views: ViewTransform::swav(scale, context.local_crops.unwrap_or(6)),
                optimizer: OptimizerConfig::lars(1e-3, 1e-6),
                lr: LrConfig::per_256(0.3).with_warmup(10).with_final_lr(0.0003),
                ema: EmaConfig::to_one(0.99),
            },
        }
    }

    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<DeepCluster> {
        let (n, d) = (setup.dataset_len, setup.embedding_dim);
        for (h, &k) in self.num_prototypes.iter().enumerate() {
            if k > n {
                return Err(Error::invalid_config(
                    format!("method.num_prototypes[{h}]"),
                    k,
                    format!("at most the number of training images ({n})"),
                ));
            }
        }
        let unit_rows = |rows: usize| {
            l2_normalize(Tensor::<2>::random(
                [rows, d],
                Distribution::Normal(0.0, 1.0),
                device,
            ))
        };
        Ok(DeepCluster {
            banks: (0..setup.num_global)
                .map(|_| buffer(unit_rows(n)))
                .collect(),
            prototypes: self
                .num_prototypes
                .iter()
                .map(|&k| buffer(unit_rows(k)))
                .collect(),
            assignments: Vec::new(),
            temperature: self.temperature,
            kmeans_iterations: self.kmeans_iterations,
        })
    }
}

/// The DeepCluster-v2 module: memory banks and prototypes (buffers, saved in checkpoints) and
/// the clusters of the current epoch.
#[derive(Module, Debug)]
pub struct DeepCluster {
    /// One `[N, D]` bank of normalised projections per global crop.
    pub banks: Vec<Param<Tensor<2>>>,
    /// Each head's centroids `[K_h, D]`.
    pub prototypes: Vec<Param<Tensor<2>>>,
    /// Each head's cluster of every image, from this epoch's k-means (recomputed from the
    /// banks at every epoch start, so checkpoints need not hold it).
    #[module(skip)]
    pub assignments: Vec<Vec<usize>>,
    /// Softmax temperature `T`.
    pub temperature: f64,
    /// k-means iterations per epoch.
    pub kmeans_iterations: usize,
}

impl DeepCluster {
    /// Each head's clusters of the batch's images, `[B]`.
    fn targets(&self, indices: &[usize], device: &Device) -> Result<Vec<Tensor<1, Int>>> {
        if self.assignments.len() != self.prototypes.len() {
            return Err(Error::MissingInput {
                context: "DeepCluster-v2 loss".into(),
                what: "this epoch's clusters (the epoch has not started)".into(),
            });
        }
        self.assignments
            .iter()
            .map(|clusters| {
                let rows = indices
                    .iter()
                    .map(|&i| {
                        clusters.get(i).map(|&c| c as i64).ok_or_else(|| {
                            Error::invalid_config(
                                "image index",
                                i,
                                format!("below the memory bank's {} rows", clusters.len()),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::from_data(
                    TensorData::new(rows, [indices.len()]),
                    device,
                ))
            })
            .collect()
    }
}

impl Method for DeepCluster {
    fn name(&self) -> &'static str {
        "DeepCluster-v2"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            initial_pass: true,
            ..Requirements::default()
        }
    }

    fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> Result<Tensor<1>> {
        let projections = require_views("DeepCluster-v2", "projections", &views.projections, 1)?;
        let device = projections[0].device();
        let targets = self.targets(context.indices, &device)?;
        let prototypes: Vec<Tensor<2>> = self.prototypes.iter().map(|p| p.val()).collect();
        deepcluster_loss(projections, &prototypes, &targets, self.temperature)
    }

    /// Writes the batch's normalised global-crop projections into their bank rows.
    fn after_step(self, views: &ViewEmbeddings, context: &StepContext) -> Result<Self> {
        let globals = self.banks.len();
        let projections =
            require_views("DeepCluster-v2", "projections", &views.projections, globals)?;
        let device = projections[0].device();
        let indices: Vec<i64> = context.indices.iter().map(|&i| i as i64).collect();
        let rows = self.banks.first().map_or(0, |b| b.val().dims()[0]);
        if let Some(&bad) = context.indices.iter().find(|&&i| i >= rows) {
            return Err(Error::invalid_config(
                "image index",
                bad,
                format!("below the memory bank's {rows} rows (the training set's size)"),
            ));
        }
        let indices: Tensor<1, Int> =
            Tensor::from_data(TensorData::new(indices, [context.indices.len()]), &device);
        let banks = self
            .banks
            .into_iter()
            .zip(projections)
            .map(|(bank, z)| {
                let updated = bank.val().select_assign(
                    0,
                    indices.clone(),
                    l2_normalize(z.clone().detach()),
                    IndexingUpdateOp::Assign,
                );
                set_buffer(bank, updated)
            })
            .collect();
        Ok(Self { banks, ..self })
    }

    /// Clusters the banks: head `h` runs k-means on bank `h mod G`, seeded by the run's seed,
    /// the epoch and the head.
    fn start_epoch(self, epoch: usize, seed: u64) -> Result<Self> {
        let mut prototypes = Vec::with_capacity(self.prototypes.len());
        let mut assignments = Vec::with_capacity(self.prototypes.len());
        for (h, old) in self.prototypes.into_iter().enumerate() {
            let bank = self.banks[h % self.banks.len()].val();
            let k = old.val().dims()[0];
            let head_seed = seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(((epoch as u64) << 16) | h as u64);
            let clusters = spherical_kmeans(&bank, k, self.kmeans_iterations, head_seed)?;
            prototypes.push(set_buffer(old, clusters.centroids));
            assignments.push(clusters.assignments);
        }
        Ok(Self {
            prototypes,
            assignments,
            ..self
        })
    }
}

/// DeepCluster-v2's loss: the cross-entropy of each crop's prototype scores
/// `normalise(z_v) . C_h^T / T` to the images' clusters `targets[h]`, averaged over heads and
/// crops. The prototypes get no gradient.
pub fn deepcluster_loss(
    projections: &[Tensor<2>],
    prototypes: &[Tensor<2>],
    targets: &[Tensor<1, Int>],
    temperature: f64,
) -> Result<Tensor<1>> {
    if prototypes.is_empty() || prototypes.len() != targets.len() || projections.is_empty() {
        return Err(Error::MissingInput {
            context: "DeepCluster-v2 loss".into(),
            what: format!(
                "one target per head and at least one crop: {} heads, {} targets, {} crops",
                prototypes.len(),
                targets.len(),
                projections.len()
            ),
        });
    }
    let units: Vec<Tensor<2>> = projections
        .iter()
        .map(|z| l2_normalize(z.clone()))
        .collect();
    let mut total: Option<Tensor<1>> = None;
    for (centroids, target) in prototypes.iter().zip(targets) {
        let batch = target.dims()[0];
        let centroids = centroids.clone().detach().transpose();
        for z in &units {
            if z.dims()[0] != batch || z.dims()[1] != centroids.dims()[0] {
                return Err(Error::ShapeMismatch {
                    context: "DeepCluster-v2 loss: projections against prototypes".into(),
                    expected: vec![batch, centroids.dims()[0]],
                    found: z.dims().to_vec(),
                });
            }
            let log_p = log_softmax(
                z.clone().matmul(centroids.clone()).div_scalar(temperature),
                1,
            );
            let picked = log_p.gather(1, target.clone().reshape([batch, 1]));
            let term = picked.mean().neg();
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
    }
    let terms = (prototypes.len() * projections.len()) as f64;
    Ok(total
        .ok_or_else(|| Error::MissingInput {
            context: "DeepCluster-v2 loss".into(),
            what: "a head and a crop".into(),
        })?
        .div_scalar(terms))
}
