//! The public entry points of pretraining: run a configuration on a dataset, with hooks, kNN
//! monitoring and resume; rebuild a checkpoint's model.

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};

use super::checkpoint::{Checkpoint, CheckpointMeta};
use super::config::PretrainConfig;
use super::metrics::{EpochMetrics, StepMetrics};
use super::run::train_model;
use crate::augment::ViewTransform;
use crate::backbone::{Backbone, Encoder};
use crate::data::{ImageDataset, check_same_classes};
use crate::distributed::World;
use crate::error::{Error, Result};
use crate::eval::{
    ClassificationReport, Features, KnnClassifier, KnnConfig, LinearProbeConfig, extract_features,
    linear_probe_on_features,
};
use crate::method::{AnyMethodConfig, MethodConfig, MethodSetup, Progress, ScheduleValues};
use crate::model::{BackboneBranch, JointEmbeddingConfig};
use crate::step::SelfSupervised;

/// What a step hook asks the loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// End training after this step (no checkpoint is written for the unfinished epoch).
    Stop,
}

/// Labelled data for the kNN monitor: a feature bank and the images it classifies.
#[derive(Clone)]
pub struct KnnEvaluation {
    /// Images whose features form the bank (e.g. the training split with labels).
    pub bank: Arc<dyn ImageDataset>,
    /// Images to classify (the validation split).
    pub queries: Arc<dyn ImageDataset>,
    /// Their deterministic view (e.g. `ViewTransform::eval(None, 32)`).
    pub transform: ViewTransform,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl KnnEvaluation {
    /// Checks, before training, that both sets are labelled with the same class names in the
    /// same order (a different order would silently shift every label).
    pub fn validate(&self) -> Result<()> {
        check_same_classes(
            &*self.bank,
            "the kNN bank",
            &*self.queries,
            "the kNN queries",
        )
    }
}

/// A hook called after every step; its answer decides whether training goes on.
pub type StepHook = Box<dyn FnMut(&StepMetrics) -> Control + Send>;
/// A hook called after every epoch.
pub type EpochHook = Box<dyn FnMut(&EpochMetrics) + Send>;
/// A hook called before every step with the scheduled values it will use; it may change any
/// of them (learning rate, weight decay, target momentum, the method's values such as DINO's
/// teacher temperature).
pub type ScheduleHook = Box<dyn FnMut(&Progress, &mut ScheduleValues) + Send>;

/// Optional parts of a run.
#[derive(Default)]
pub struct PretrainOptions {
    /// Called after every step with its metrics.
    pub on_step: Option<StepHook>,
    /// Called after every epoch with its metrics.
    pub on_epoch: Option<EpochHook>,
    /// Called before every step; may change its scheduled values.
    pub on_schedule: Option<ScheduleHook>,
    /// kNN monitor data.
    pub knn: Option<KnnEvaluation>,
    /// Resume from this checkpoint (configuration and architecture must match).
    pub resume: Option<PathBuf>,
    /// The ranks training together ([`World::init`] under `mpirun`; a world of one by
    /// default). Every rank calls the pretraining function with the same configuration, and
    /// its hooks must decide alike on every rank (a rank that stops alone is waited for).
    pub world: World,
}

/// The result of pretraining.
#[derive(Debug)]
pub struct Pretrained<E: Encoder, M: Module = crate::method::AnyMethod> {
    /// The trained model (online and target branches, method), on the autodiff device.
    pub model: SelfSupervised<E, M>,
    /// Metrics of every epoch (including those before a resume).
    pub history: Vec<EpochMetrics>,
    /// Global steps completed.
    pub steps: usize,
    /// Where the last checkpoint was written, if any.
    pub checkpoint: Option<PathBuf>,
}

impl<E: Encoder, M: Module> Pretrained<E, M> {
    /// The trained backbone in evaluation mode, on the plain device.
    pub fn backbone(&self) -> E {
        self.model.embedding.online.backbone.valid()
    }

    /// The online or the momentum target's backbone in evaluation mode, on the plain device
    /// (see [`BackboneBranch`]); an error when the method keeps no target.
    pub fn backbone_of(&self, branch: BackboneBranch) -> Result<E>
    where
        M: crate::method::Method,
    {
        let backbone = self.model.embedding.backbone_of(branch).ok_or_else(|| {
            BackboneBranch::missing_target(
                "encoder",
                crate::method::Method::name(&self.model.method),
            )
        })?;
        Ok(backbone.valid())
    }
}

/// The file a run's checkpoint is written to inside `output_dir`.
pub const CHECKPOINT_FILE: &str = "checkpoint.ckpt";
/// The metrics file inside `output_dir`.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Pretrains the built-in backbone of `config` on `dataset` (see [`pretrain_encoder`]).
///
/// On the CPU this also keeps freed memory in the process
/// ([`crate::kernels::allocator::retain_freed_memory`]), so every step reuses the memory of
/// the previous one.
pub fn pretrain<C: MethodConfig>(
    config: &PretrainConfig<C>,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
) -> Result<Pretrained<Backbone, C::Method>> {
    pretrain_with(config, dataset, device, PretrainOptions::default())
}

/// [`pretrain`] with hooks, kNN monitoring or resuming.
pub fn pretrain_with<C: MethodConfig>(
    config: &PretrainConfig<C>,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    options: PretrainOptions,
) -> Result<Pretrained<Backbone, C::Method>> {
    config.check()?;
    let backbone = init_backbone(config, device)?;
    let architecture = serde_json::to_string(&config.backbone).unwrap_or_default();
    pretrain_encoder(config, backbone, &architecture, dataset, device, options)
}

/// The backbone of `config`, initialised exactly as [`pretrain`] initialises it (same seed,
/// same weights), on `device`'s autodiff counterpart: the random-init baseline of an
/// evaluation.
pub fn init_backbone<C: MethodConfig>(
    config: &PretrainConfig<C>,
    device: &Device,
) -> Result<Backbone> {
    let train_device = device.clone().autodiff();
    crate::seeded::with_seed(&train_device, config.loader.seed, || {
        let backbone = config.backbone.init(&train_device)?;
        crate::seeded::materialize(&backbone);
        Ok(backbone)
    })
}

/// Builds the model of `config` (joint embedding and method) around `backbone`, for a
/// training set of `dataset_len` images, on `device` (an autodiff device to train).
pub fn build_model<E: Encoder, C: MethodConfig>(
    config: &PretrainConfig<C>,
    backbone: E,
    dataset_len: usize,
    device: &Device,
) -> Result<SelfSupervised<E, C::Method>> {
    use crate::method::Method;
    let heads = config
        .method
        .heads(backbone.feature_dim(), config.head_width);
    let feature_dim = backbone.feature_dim();
    let setup = MethodSetup {
        embedding_dim: if heads.projector.is_identity() {
            feature_dim
        } else {
            heads.projector.output_dim()
        },
        feature_dim,
        num_views: config.views.num_views(),
        num_global: config.views.num_global(),
        dataset_len,
        seed: config.loader.seed,
    };
    let method = config.method.init(&setup, device)?;
    let architecture = JointEmbeddingConfig::for_method(heads, &method.requirements());
    SelfSupervised::new(architecture.init(backbone)?, method)
}

/// Pretrains any [`Encoder`] (e.g. your own burn module) with the method, views, optimiser
/// and schedules of `config`. `architecture` describes the encoder; a checkpoint made with
/// another description is refused on resume. `device` is the plain device; training runs on
/// its autodiff counterpart, where `backbone` must already live.
pub fn pretrain_encoder<E: Encoder, C: MethodConfig>(
    config: &PretrainConfig<C>,
    backbone: E,
    architecture: &str,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    options: PretrainOptions,
) -> Result<Pretrained<E, C::Method>> {
    config.check()?;
    if let Some(knn) = &options.knn {
        knn.validate()?;
    }
    let train_device = device.clone().autodiff();
    let model = crate::seeded::with_seed(&train_device, config.loader.seed, || {
        let model = build_model(config, backbone, dataset.len(), &train_device)?;
        crate::seeded::materialize(&model);
        Ok::<_, Error>(model)
    })?;
    train_model(config, model, architecture, dataset, device, options)
}

/// Loads the weights (and method state) of a checkpoint's model bytes into `model`, naming
/// `path` in errors.
pub(crate) fn load_weights<M: Module>(model: M, bytes: Vec<u8>, path: &str) -> Result<M> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_string(),
        reason,
    };
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| bad(format!("model: {e}")))?;
    model.try_load_record(record).map_err(|e| {
        bad(format!(
            "its model does not fit this run's (the method's state or the views may differ \
             from the checkpoint's): {e}"
        ))
    })
}

/// Rebuilds the model of a checkpoint made by [`pretrain`] with a built-in method and
/// backbone on `device`'s autodiff counterpart, with its weights; also returns the
/// checkpoint's metadata.
pub fn load_checkpoint(
    path: impl AsRef<std::path::Path>,
    device: &Device,
) -> Result<(SelfSupervised<Backbone>, CheckpointMeta<AnyMethodConfig>)> {
    let path = path.as_ref();
    let ckpt = Checkpoint::read(path)?;
    let config = &ckpt.meta.config;
    let train_device = device.clone().autodiff();
    let backbone = config.backbone.init(&train_device)?;
    let model = build_model(config, backbone, ckpt.meta.dataset_len, &train_device)?;
    let model = load_weights(model, ckpt.model, &path.display().to_string())?;
    Ok((model, ckpt.meta))
}

/// Features `[n, d]` of labelled images, with the labels.
type Labelled = (Tensor<2>, Vec<usize>);

/// The evaluation data's features under `backbone` (bank, then queries), encoded
/// `eval.batch_size` images at a time, with their labels.
fn labelled_features<E: Encoder>(
    backbone: &E,
    eval: &KnnEvaluation,
    device: &Device,
) -> Result<(Labelled, Labelled)> {
    eval.validate()?;
    let backbone = backbone.valid();
    let features = |images: &Arc<dyn ImageDataset>, what: &str| -> Result<Labelled> {
        let Features { features, labels } = extract_features(
            &backbone,
            images.clone(),
            &eval.transform,
            eval.batch_size,
            device,
        )?;
        let labels = labels.ok_or_else(|| Error::MissingInput {
            context: "kNN / linear-probe evaluation".into(),
            what: format!("labels of the {what} images"),
        })?;
        Ok((features, labels))
    };
    Ok((
        features(&eval.bank, "bank")?,
        features(&eval.queries, "query")?,
    ))
}

/// kNN top-1 of labelled features (`bank` classifies `queries`).
fn knn_top1(bank: Labelled, queries: Labelled, classes: usize, knn: KnnConfig) -> Result<f64> {
    let classifier = KnnClassifier::new(bank.0, bank.1, classes, knn)?;
    Ok(classifier.evaluate(queries.0, &queries.1)?.top1)
}

/// The backbone of a checkpoint made by [`pretrain`] (the online one, or the momentum
/// target's) on `device`'s autodiff counterpart with every parameter trainable, and the
/// checkpoint's metadata: what evaluation, fine-tuning and export start from.
///
/// `branch: None` takes the backbone the run itself evaluated
/// ([`PretrainConfig::eval_encoder`](super::PretrainConfig::eval_encoder)), so a run
/// pretrained to be judged by its target is judged, probed and exported by its target.
pub fn load_backbone(
    path: impl AsRef<std::path::Path>,
    branch: Option<BackboneBranch>,
    device: &Device,
) -> Result<(Backbone, CheckpointMeta<AnyMethodConfig>)> {
    let (model, meta) = load_checkpoint(path, device)?;
    let branch = branch.unwrap_or(meta.config.eval_encoder);
    let backbone = model
        .embedding
        .backbone_of(branch)
        .ok_or_else(|| BackboneBranch::missing_target("encoder", meta.config.method.name()))?;
    // The target was made without gradients (it moves by EMA); fine-tuning trains it all.
    Ok((backbone.clone().set_require_grad(true), meta))
}

/// kNN top-1 of `backbone`'s features on the evaluation data, with `knn`'s settings.
pub fn knn_accuracy<E: Encoder>(
    backbone: &E,
    eval: &KnnEvaluation,
    knn: KnnConfig,
    device: &Device,
) -> Result<f64> {
    let (bank, queries) = labelled_features(backbone, eval, device)?;
    knn_top1(bank, queries, eval.bank.classes().len(), knn)
}

/// The two frozen-feature scores of an encoder: kNN top-1, and the linear probe trained on the
/// bank and reported on the queries.
#[derive(Debug, Clone)]
pub struct FrozenScores {
    /// kNN top-1 on the queries.
    pub knn_top1: f64,
    /// The linear probe's report on the queries.
    pub probe: ClassificationReport,
}

/// kNN top-1 and the linear probe of `backbone` on the evaluation data, from one pass of the
/// encoder over each split (the two evaluations share the features; [`knn_accuracy`] followed by
/// [`linear_probe`](fn@crate::eval::linear_probe) would encode every image twice). The images are
/// encoded `eval.batch_size` at a time (`probe.feature_batch_size` is not used), and the
/// classes are the bank's (which [`KnnEvaluation::validate`] checks the queries share).
pub fn frozen_evaluation<E: Encoder>(
    backbone: &E,
    eval: &KnnEvaluation,
    knn: KnnConfig,
    probe: &LinearProbeConfig,
    device: &Device,
) -> Result<FrozenScores> {
    probe.validate()?;
    let (bank, queries) = labelled_features(backbone, eval, device)?;
    let classes = eval.bank.classes().len();
    let knn_top1 = knn_top1(bank.clone(), queries.clone(), classes, knn)?;
    let as_features = |(features, labels): Labelled| Features {
        features,
        labels: Some(labels),
    };
    let probe = linear_probe_on_features(
        as_features(bank),
        as_features(queries),
        classes,
        probe,
        device,
    )?;
    Ok(FrozenScores { knn_top1, probe })
}
