//! The joint-embedding (Siamese) architecture: an online branch (backbone, projector, optional
//! predictor) and a target branch that is either an EMA copy of the online backbone and
//! projector (BYOL's target, MoCo's key encoder, DINO's teacher) or the online branch itself
//! under stop-gradient (SimSiam; Barlow Twins, SwAV, VICReg, SimCLR and DeepCluster-v2 use no
//! separate target).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;

use crate::augment::Masks;
use crate::backbone::Encoder;
use crate::check;
use crate::energy::Energy;
use crate::error::Error;
use crate::method::{Heads, Requirements, TargetViews, TokenInput, ViewEmbeddings};
use crate::model::ema::{ema_copy, ema_update};
use crate::model::head::{ProjectionHead, ProjectionHeadConfig};

/// Configuration of a [`JointEmbedding`] around a given backbone.
#[derive(Config, Debug)]
pub struct JointEmbeddingConfig {
    /// Projector from backbone features to embeddings.
    pub projector: ProjectionHeadConfig,
    /// Predictor on the online branch (BYOL, SimSiam).
    pub predictor: Option<ProjectionHeadConfig>,
    /// Keep an EMA copy of backbone and projector as target branch (BYOL, MoCo, DINO).
    #[config(default = false)]
    pub momentum_target: bool,
}

impl JointEmbeddingConfig {
    /// The architecture a method needs: its `heads`, the predictor only when `requirements`
    /// ask for one, and a momentum target when they ask for one.
    pub fn for_method(heads: Heads, requirements: &Requirements) -> Self {
        Self {
            projector: heads.projector,
            predictor: heads.predictor.filter(|_| requirements.predictor),
            momentum_target: requirements.momentum_target,
        }
    }

    /// Builds the architecture around `backbone`, on the backbone's device. Train it on an
    /// autodiff device (`device.autodiff()`).
    pub fn init<E: Encoder>(&self, backbone: E) -> crate::Result<JointEmbedding<E>> {
        let device = backbone
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| Error::MissingInput {
                context: "joint embedding".into(),
                what: "backbone parameters (to find the device)".into(),
            })?;
        if !self.projector.is_identity() && self.projector.input_dim() != backbone.feature_dim() {
            return Err(Error::invalid_config(
                "projector input_dim",
                self.projector.input_dim(),
                format!("the backbone's feature_dim ({})", backbone.feature_dim()),
            ));
        }
        let projector = self.projector.init(&device)?;
        let predictor = match &self.predictor {
            Some(p) => {
                let out = if self.projector.is_identity() {
                    backbone.feature_dim()
                } else {
                    self.projector.output_dim()
                };
                if p.input_dim() != out || p.output_dim() != out {
                    return Err(Error::invalid_config(
                        "predictor dimensions",
                        format!("{} -> {}", p.input_dim(), p.output_dim()),
                        format!("{out} -> {out} (the projector's output)"),
                    ));
                }
                Some(p.init(&device)?)
            }
            None => None,
        };
        let online = OnlineNetwork {
            backbone,
            projector,
            predictor,
        };
        let target = self
            .momentum_target
            .then(|| ema_copy(&online.encoder_part()));
        Ok(JointEmbedding { online, target })
    }
}

/// Backbone and projector: the part of the network that has a target twin.
#[derive(Module, Debug)]
pub struct Branch<E> {
    /// The image encoder.
    pub backbone: E,
    /// The projector.
    pub projector: ProjectionHead,
}

impl<E: Encoder> Branch<E> {
    /// Projections `[B, D]` of images `[B, C, H, W]`.
    pub fn project(&self, images: Tensor<4>) -> crate::Result<Tensor<2>> {
        self.projector.forward(self.backbone.encode(images))
    }
}

/// The online branch: backbone, projector and optional predictor, trained by the optimiser.
#[derive(Module, Debug)]
pub struct OnlineNetwork<E> {
    /// The image encoder (what is kept after pretraining).
    pub backbone: E,
    /// The projector.
    pub projector: ProjectionHead,
    /// The predictor (BYOL, SimSiam).
    pub predictor: Option<ProjectionHead>,
}

impl<E: Encoder> OnlineNetwork<E> {
    fn encoder_part(&self) -> Branch<E> {
        Branch {
            backbone: self.backbone.clone(),
            projector: self.projector.clone(),
        }
    }
}

/// Which of a joint embedding's backbones to take after training.
///
/// Most methods are evaluated with the online backbone. The papers of the methods with a
/// momentum target differ: I-JEPA (Assran et al. 2023, section 5) and DINO (Caron et al. 2021,
/// section 5.1) report their target (teacher) encoder, BYOL and MoCo their online encoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneBranch {
    /// The backbone the optimiser trains.
    #[default]
    Online,
    /// The EMA copy of it (BYOL's target, MoCo's key encoder, DINO's teacher, I-JEPA's target
    /// encoder).
    Target,
}

impl BackboneBranch {
    /// Whether this is the online backbone (the default).
    pub fn is_online(&self) -> bool {
        *self == Self::Online
    }

    /// The error for asking `field` for the target of `method`, which keeps none.
    pub fn missing_target(field: &str, method: &str) -> Error {
        Error::invalid_config(
            field,
            "target",
            format!(
                "online: {method} keeps no momentum target (BYOL, MoCo, DINO and I-JEPA keep one)"
            ),
        )
    }
}

impl std::str::FromStr for BackboneBranch {
    type Err = Error;

    /// `online` or `target`.
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "online" => Ok(Self::Online),
            "target" => Ok(Self::Target),
            other => Err(Error::invalid_config("encoder", other, "online or target")),
        }
    }
}

/// A joint-embedding architecture: the online branch and, for methods with a momentum target,
/// its EMA twin.
///
/// The target's parameters never require gradients and have their own parameter ids, so an
/// optimiser stepping the whole module leaves them untouched; only
/// [`update_target`](JointEmbedding::update_target) changes them.
#[derive(Module, Debug)]
pub struct JointEmbedding<E> {
    /// The online branch.
    pub online: OnlineNetwork<E>,
    /// The EMA target of backbone and projector, absent for methods without one.
    pub target: Option<Branch<E>>,
}

impl<E: Encoder> JointEmbedding<E> {
    /// The trained image encoder.
    pub fn backbone(&self) -> &E {
        &self.online.backbone
    }

    /// The online backbone, or the momentum target's (`None` when the method keeps no
    /// target). The target's parameters require no gradient: to train it (fine-tuning), call
    /// `set_require_grad(true)` on a clone.
    pub fn backbone_of(&self, branch: BackboneBranch) -> Option<&E> {
        match branch {
            BackboneBranch::Online => Some(&self.online.backbone),
            BackboneBranch::Target => self.target.as_ref().map(|target| &target.backbone),
        }
    }

    /// Online embeddings (projector outputs) `[B, D]` of images `[B, C, H, W]`.
    pub fn embed(&self, images: Tensor<4>) -> crate::Result<Tensor<2>> {
        self.online
            .projector
            .forward(self.online.backbone.encode(images))
    }

    /// Runs every view (`[B, C, H, W]` each; global crops first, the first `num_global` of them)
    /// through the online branch and the predictor, and the views `target_views` names through
    /// the target branch, as configured.
    pub fn embed_views(
        &self,
        views: &[Tensor<4>],
        num_global: usize,
        target_views: TargetViews,
    ) -> crate::Result<ViewEmbeddings> {
        let requirements = Requirements {
            target_views,
            ..Requirements::default()
        };
        self.embed_batch(views, num_global, &requirements, None)
    }

    /// [`embed_views`](Self::embed_views) for what `requirements` asks: for masked-image
    /// methods ([`TokenInput`] other than `None`), the tokens of the first view's kept or
    /// context patches under `masks` (and the target's tokens of every patch), with two
    /// pooled embeddings for the collapse monitor: the means of two random halves of the kept
    /// patches (MAE), or of the context and of the target's tokens (I-JEPA).
    pub fn embed_batch(
        &self,
        views: &[Tensor<4>],
        num_global: usize,
        requirements: &Requirements,
        masks: Option<&Masks>,
    ) -> crate::Result<ViewEmbeddings> {
        if requirements.tokens != TokenInput::None {
            return self.embed_tokens(views, requirements.tokens, masks);
        }
        let target_views = requirements.target_views;
        if views.len() < 2 {
            return Err(Error::MissingInput {
                context: "joint embedding".into(),
                what: format!("views: needs at least 2, got {}", views.len()),
            });
        }
        if num_global == 0 || num_global > views.len() {
            return Err(Error::invalid_config(
                "num_global",
                num_global,
                format!("between 1 and the number of views ({})", views.len()),
            ));
        }
        let batch = views[0].dims()[0];
        for (v, view) in views.iter().enumerate() {
            let [b, c, h, w] = view.dims();
            if b != batch {
                return Err(Error::ShapeMismatch {
                    context: format!("joint embedding: batch size of view {v}"),
                    expected: vec![batch, c, h, w],
                    found: vec![b, c, h, w],
                });
            }
            if b == 0 || h == 0 || w == 0 {
                return Err(Error::ShapeMismatch {
                    context: format!("joint embedding: view {v} is empty"),
                    expected: vec![batch.max(1), c, h.max(1), w.max(1)],
                    found: vec![b, c, h, w],
                });
            }
            self.online
                .backbone
                .check_images([b, c, h, w])
                .map_err(|e| match e {
                    Error::ShapeMismatch {
                        context,
                        expected,
                        found,
                    } => Error::ShapeMismatch {
                        context: format!("joint embedding: view {v}: {context}"),
                        expected,
                        found,
                    },
                    other => other,
                })?;
        }
        let mut out = ViewEmbeddings {
            num_global,
            ..Default::default()
        };
        let target_count = match target_views {
            TargetViews::All => views.len(),
            TargetViews::Global => num_global,
        };
        for (v, view) in views.iter().enumerate() {
            let z = self.embed(view.clone())?;
            if let Some(predictor) = &self.online.predictor {
                out.predictions.push(predictor.forward(z.clone())?);
            }
            if let Some(target) = self.target.as_ref().filter(|_| v < target_count) {
                out.targets.push(target.project(view.clone())?.detach());
            }
            out.projections.push(z);
        }
        Ok(out)
    }

    fn embed_tokens(
        &self,
        views: &[Tensor<4>],
        input: TokenInput,
        masks: Option<&Masks>,
    ) -> crate::Result<ViewEmbeddings> {
        let missing = |what: &str| Error::MissingInput {
            context: "masked-image method".into(),
            what: what.into(),
        };
        let images = views.first().ok_or_else(|| missing("a view"))?.clone();
        let masks = masks.ok_or_else(|| missing("patch masks (views.masking)"))?;
        self.online.backbone.check_images(images.dims())?;
        let no_tokens = || missing("tokens: the backbone must be a vision transformer");
        let tokens = self
            .online
            .backbone
            .encode_kept(images.clone(), masks.keep.clone())
            .ok_or_else(no_tokens)??;
        let [b, k, d] = tokens.dims();
        let patches = tokens.clone().narrow(1, 1, k - 1);
        let (first, second, target_tokens) = match input {
            TokenInput::ContextAndTarget => {
                let target = self
                    .target
                    .as_ref()
                    .ok_or_else(|| missing("a momentum target"))?;
                let all = target
                    .backbone
                    .encode_tokens(images.clone())
                    .ok_or_else(no_tokens)?
                    .detach();
                let n = all.dims()[1];
                let pooled = all.clone().narrow(1, 1, n - 1).mean_dim(1);
                (patches.mean_dim(1), pooled, Some(all))
            }
            _ => {
                let half = ((k - 1) / 2).max(1);
                let rest = (k - 1 - half).max(1);
                let second = tokens.clone().narrow(1, k - rest, rest).mean_dim(1);
                (patches.narrow(1, 0, half).mean_dim(1), second, None)
            }
        };
        let pooled = [first, second].map(|t| t.reshape([b, d]));
        Ok(ViewEmbeddings {
            projections: pooled.to_vec(),
            num_global: 1,
            tokens: Some(tokens),
            target_tokens,
            images: Some(images),
            masks: Some(masks.clone()),
            ..ViewEmbeddings::default()
        })
    }

    /// Moves the EMA target towards the online weights with decay `tau` (after each optimiser
    /// step). A no-op without a target.
    pub fn update_target(self, tau: f64) -> crate::Result<Self> {
        let Self { online, target } = self;
        let target = match target {
            Some(t) => Some(ema_update(t, &online.encoder_part(), tau)?),
            None => None,
        };
        Ok(Self { online, target })
    }

    /// Energy of image pairs under the online encoder and projector: `E(x_i, y_i)` for each
    /// row, low when `y_i` is a view of `x_i`. Use on a `valid()` model for inference.
    pub fn energy(&self, x: Tensor<4>, y: Tensor<4>, energy: Energy) -> crate::Result<Tensor<1>> {
        check::same_shape(|| "energy: second image batch".into(), &x, &y)?;
        let (a, b) = (self.embed(x)?, self.embed(y)?);
        energy.energy(a, b)
    }
}
