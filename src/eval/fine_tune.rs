//! Full fine-tuning: the pretrained backbone and a new linear head trained end to end with
//! cross-entropy on labelled images (SGD with momentum, cosine learning rate), evaluated on a
//! held-out split.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::report::{ClassificationReport, argmax_classes};
use crate::augment::{ViewRecipe, ViewTransform};
use crate::backbone::Encoder;
use crate::data::{ImageDataset, LoaderConfig, ViewLoader, check_same_classes};
use crate::error::{Error, Result};
use crate::optim::{GroupedOptimizer, OptimizerConfig, ParamGroups, WarmupCosine};

/// A backbone with a linear classification head.
#[derive(Module, Debug)]
pub struct Classifier<E> {
    /// The encoder.
    pub backbone: E,
    /// `Linear(feature_dim, classes)`.
    pub head: Linear,
}

impl<E: Encoder> Classifier<E> {
    /// Class logits `[B, classes]` of `images`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.encode(images))
    }
}

/// Fine-tuning settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FineTuneConfig {
    /// Passes over the labelled images.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (cosine to 0).
    pub lr: f64,
    /// The optimiser (SGD momentum 0.9, weight decay 5e-4 by default, biases and
    /// normalisation parameters without decay).
    pub optimizer: OptimizerConfig,
    /// Training augmentation (one view); the default is a light random resized crop (scale
    /// 0.5-1) with horizontal flips at `image_size`.
    pub views: ViewTransform,
    /// Seed of the batches, augmentations and head initialisation.
    pub seed: u64,
    /// Layer-wise learning-rate decay for vision transformers (BEiT / MAE fine-tuning, e.g.
    /// 0.75): block `i` of `L` trains at `decay^(L - i)` times the rate, the embeddings at
    /// `decay^(L + 1)`. `None`: every layer at the same rate.
    #[serde(default)]
    pub layer_decay: Option<f64>,
}

impl FineTuneConfig {
    /// Defaults for `image_size` pixels.
    pub fn new(image_size: usize) -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            lr: 0.05,
            optimizer: OptimizerConfig::cifar_sgd(),
            views: ViewTransform::from_recipes([ViewRecipe::crop_and_flip(image_size, (0.5, 1.0))]),
            seed: 0,
            layer_decay: None,
        }
    }
}

/// Fine-tunes `backbone` (on `device.autodiff()`) with a new head on `train`, and evaluates on
/// `val` with the deterministic `eval_transform`.
pub fn fine_tune<E: Encoder>(
    backbone: E,
    train: Arc<dyn ImageDataset>,
    val: Arc<dyn ImageDataset>,
    eval_transform: &ViewTransform,
    config: &FineTuneConfig,
    device: &Device,
) -> Result<(Classifier<E>, ClassificationReport)> {
    if config.epochs == 0 {
        return Err(Error::invalid_config("finetune.epochs", 0, ">= 1"));
    }
    check_same_classes(
        &*train,
        "the fine-tuning images",
        &*val,
        "the validation images",
    )?;
    let classes = train.classes().len();
    let ad = device.clone().autodiff();
    let head = crate::seeded::with_seed(&ad, config.seed, || {
        let head = LinearConfig::new(backbone.feature_dim(), classes).init(&ad);
        crate::seeded::materialize(&head);
        head
    });
    let mut model = Classifier { backbone, head };
    let loader_config = LoaderConfig {
        batch_size: config.batch_size.min(train.len()),
        shuffle: true,
        seed: config.seed,
        drop_last: true,
        workers: 0,
        prefetch: 0,
    };
    let loader = ViewLoader::new(train, config.views.clone(), loader_config, device)?;
    let total = loader.batches_per_epoch() * config.epochs;
    let schedule = WarmupCosine::new(config.lr, 0, total)?;
    let groups = if config.optimizer.exclude_bias_and_norm {
        ParamGroups::rank_one_excluded(&model)
    } else {
        ParamGroups::default()
    };
    let groups = match config.layer_decay {
        Some(decay) => {
            crate::check::ensure(
                "finetune.layer_decay",
                decay,
                decay > 0.0 && decay <= 1.0,
                "in (0, 1]",
            )?;
            groups.with_layer_decay(&model, decay)
        }
        None => groups,
    };
    let mut optimizer = GroupedOptimizer::new(&config.optimizer, &groups, config.lr)?;
    let weight_decay = config.optimizer.weight_decay;
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let mut step = 0;
    for epoch in 0..config.epochs {
        for batch in loader.epoch(epoch as u64) {
            let batch = batch?;
            let targets = batch.label_tensor(&ad).ok_or_else(|| Error::MissingInput {
                context: "fine-tuning".into(),
                what: "labels of the training images".into(),
            })?;
            let images = batch.views[0].clone().autodiff();
            let loss = loss_fn.forward(model.forward(images), targets);
            let value = crate::check::scalar(&loss);
            if !value.is_finite() {
                return Err(Error::TrainingStopped {
                    step,
                    epoch,
                    reason: format!("fine-tuning loss is {value}"),
                });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(schedule.lr(step), weight_decay, model, grads);
            step += 1;
        }
    }
    let report = evaluate(&model, val, eval_transform, config.batch_size, device)?;
    Ok((model, report))
}

/// Top-1 and confusion matrix of a classifier on labelled images.
pub fn evaluate<E: Encoder>(
    model: &Classifier<E>,
    data: Arc<dyn ImageDataset>,
    transform: &ViewTransform,
    batch_size: usize,
    device: &Device,
) -> Result<ClassificationReport> {
    let model = model.valid();
    let classes = data.classes().len();
    let config = LoaderConfig::in_order(batch_size.min(data.len()).max(1));
    let loader = ViewLoader::new(data, transform.clone(), config, device)?;
    let (mut predicted, mut truth) = (Vec::new(), Vec::new());
    for batch in loader.epoch(0) {
        let batch = batch?;
        let labels = batch.labels.clone().ok_or_else(|| Error::MissingInput {
            context: "evaluation".into(),
            what: "labels".into(),
        })?;
        let images = batch.views[0].clone();
        predicted.extend(argmax_classes(model.forward(images))?);
        truth.extend(labels);
    }
    Ok(ClassificationReport::from_predictions(
        &predicted, &truth, classes,
    ))
}
