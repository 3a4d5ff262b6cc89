//! The linear probe: a linear classifier trained with cross-entropy on frozen features, the
//! standard measure of representation quality (the protocol of SimCLR, BYOL and lightly's
//! benchmarks). Features are computed once; each feature dimension is standardised with the
//! training split's mean and std (a fixed affine map, which a linear layer could absorb, but
//! which makes one learning rate fit every encoder); then a linear layer is trained with
//! Adam.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::features::{Features, extract_features};
use super::report::{ClassificationReport, argmax_classes};
use crate::augment::{AugmentRng, ViewTransform};
use crate::backbone::Encoder;
use crate::data::{ImageDataset, check_same_classes};
use crate::error::{Error, Result};

/// Linear-probe training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Features per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the batch order and initialisation.
    pub seed: u64,
    /// Images per forward pass when extracting features.
    pub feature_batch_size: usize,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 256,
            lr: 1e-3,
            seed: 0,
            feature_batch_size: 500,
        }
    }
}

impl LinearProbeConfig {
    /// Checks that the settings can train: at least one epoch and one feature per step, and a
    /// finite positive learning rate.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::invalid_config(
                "probe",
                format!("epochs {}, batch_size {}", self.epochs, self.batch_size),
                "both at least 1",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid_config(
                "probe.lr",
                self.lr,
                "a finite value > 0",
            ));
        }
        Ok(())
    }
}

/// Per-dimension standardisation fitted on the training features.
fn standardise(train: Tensor<2>, other: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let mean = train.clone().mean_dim(0);
    let std = train.clone().var(0).add_scalar(1e-6).sqrt();
    ((train - mean.clone()) / std.clone(), (other - mean) / std)
}

/// Trains a linear classifier on `encoder`'s frozen features of the labelled `train` images
/// and reports top-1 and the confusion matrix on `val`.
pub fn linear_probe<E: Encoder>(
    encoder: &E,
    train: Arc<dyn ImageDataset>,
    val: Arc<dyn ImageDataset>,
    transform: &ViewTransform,
    config: &LinearProbeConfig,
    device: &Device,
) -> Result<ClassificationReport> {
    config.validate()?;
    check_same_classes(
        &*train,
        "the probe's training images",
        &*val,
        "the validation images",
    )?;
    let classes = train.classes().len().max(val.classes().len());
    let train_f = extract_features(encoder, train, transform, config.feature_batch_size, device)?;
    let val_f = extract_features(encoder, val, transform, config.feature_batch_size, device)?;
    linear_probe_on_features(train_f, val_f, classes, config, device)
}

/// The linear probe on features already extracted (e.g. the ones a kNN evaluation of the same
/// encoder computed), so an encoder is run over each split once: standardises them with the
/// training split's statistics, fits the classifier on `train` and reports on `val`.
pub fn linear_probe_on_features(
    train: Features,
    val: Features,
    classes: usize,
    config: &LinearProbeConfig,
    device: &Device,
) -> Result<ClassificationReport> {
    config.validate()?;
    let missing = |what: &str| Error::MissingInput {
        context: "linear probe".into(),
        what: format!("labels of the {what} images"),
    };
    let train_labels = train.labels.ok_or_else(|| missing("training"))?;
    let val_labels = val.labels.ok_or_else(|| missing("validation"))?;
    let (train_x, val_x) = standardise(train.features, val.features);
    let classifier = fit_linear(train_x, &train_labels, classes, config, device)?;
    let predicted = predict(&classifier, val_x)?;
    Ok(ClassificationReport::from_predictions(
        &predicted,
        &val_labels,
        classes,
    ))
}

/// Trains `Linear(d, classes)` with cross-entropy and Adam on features `x` (plain device).
pub fn fit_linear(
    x: Tensor<2>,
    labels: &[usize],
    classes: usize,
    config: &LinearProbeConfig,
    device: &Device,
) -> Result<Linear> {
    let [n, d] = x.dims();
    if labels.len() != n {
        return Err(Error::ShapeMismatch {
            context: "linear probe labels".into(),
            expected: vec![n],
            found: vec![labels.len()],
        });
    }
    let ad = device.clone().autodiff();
    let mut model: Linear = crate::seeded::with_seed(&ad, config.seed, || {
        let model = LinearConfig::new(d, classes).init(&ad);
        crate::seeded::materialize(&model);
        model
    });
    // PyTorch's `torch.optim.Adam` epsilon (burn's default is 1e-5), as the reference probes use.
    let mut optimizer: ModuleOptimizer = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let x = x.autodiff();
    let mut order: Vec<usize> = (0..n).collect();
    let batch = config.batch_size.min(n);
    for epoch in 0..config.epochs {
        AugmentRng::stream(&[config.seed, epoch as u64, 0x9e37]).shuffle(&mut order);
        for chunk in order.chunks(batch) {
            let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [chunk.len()]), &ad);
            let targets: Vec<i64> = chunk.iter().map(|&i| labels[i] as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [chunk.len()]), &ad);
            let logits = model.forward(x.clone().select(0, idx));
            let loss = loss_fn.forward(logits, targets);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.lr, model, grads);
        }
    }
    Ok(model.valid())
}

/// Arg-max class of each row of `x` under `classifier`.
pub fn predict(classifier: &Linear, x: Tensor<2>) -> Result<Vec<usize>> {
    argmax_classes(classifier.forward(x))
}
