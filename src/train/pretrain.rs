//! The pretraining loop: loader -> training step -> schedules -> monitors -> metrics ->
//! checkpoints, with exact resume.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::OptimizerRecord;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use super::checkpoint::{Checkpoint, CheckpointMeta};
use super::config::PretrainConfig;
use super::metrics::{EpochMetrics, MetricsWriter, StepMetrics};
use crate::augment::ViewTransform;
use crate::backbone::{Backbone, Encoder};
use crate::data::{ImageDataset, ViewLoader};
use crate::error::{Error, Result};
use crate::eval::{KnnClassifier, effective_rank, extract_features};
use crate::objective::queue::EmbeddingQueue;
use crate::optim::{EmaSchedule, WarmupCosine};
use crate::siamese::JointEmbeddingConfig;
use crate::step::{SelfSupervised, StepState, train_step};

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

/// A hook called after every step; its answer decides whether training goes on.
pub type StepHook = Box<dyn FnMut(&StepMetrics) -> Control + Send>;
/// A hook called after every epoch.
pub type EpochHook = Box<dyn FnMut(&EpochMetrics) + Send>;

/// Optional parts of a run.
#[derive(Default)]
pub struct PretrainOptions {
    /// Called after every step with its metrics.
    pub on_step: Option<StepHook>,
    /// Called after every epoch with its metrics.
    pub on_epoch: Option<EpochHook>,
    /// kNN monitor data.
    pub knn: Option<KnnEvaluation>,
    /// Resume from this checkpoint (configuration and architecture must match).
    pub resume: Option<PathBuf>,
}

/// The result of pretraining.
#[derive(Debug)]
pub struct Pretrained<E: Encoder> {
    /// The trained model (online and target branches, objective), on the autodiff device.
    pub model: SelfSupervised<E>,
    /// Metrics of every epoch (including those before a resume).
    pub history: Vec<EpochMetrics>,
    /// Global steps completed.
    pub steps: usize,
    /// Where the last checkpoint was written, if any.
    pub checkpoint: Option<PathBuf>,
}

impl<E: Encoder> Pretrained<E> {
    /// The trained backbone in evaluation mode, on the plain device.
    pub fn backbone(&self) -> E {
        self.model.embedding.online.backbone.valid()
    }
}

/// The file a run's checkpoint is written to inside `output_dir`.
pub const CHECKPOINT_FILE: &str = "checkpoint.ckpt";
/// The metrics file inside `output_dir`.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Pretrains the built-in backbone of `config` on `dataset` (see [`pretrain_encoder`]).
///
/// On the CPU this also calls [`crate::allocator::retain_freed_memory`] once for the process, so
/// every step reuses the memory of the previous one.
pub fn pretrain(
    config: &PretrainConfig,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
) -> Result<Pretrained<Backbone>> {
    pretrain_with(config, dataset, device, PretrainOptions::default())
}

/// [`pretrain`] with hooks, kNN monitoring or resuming.
pub fn pretrain_with(
    config: &PretrainConfig,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    options: PretrainOptions,
) -> Result<Pretrained<Backbone>> {
    config.check()?;
    let train_device = device.clone().autodiff();
    let model = crate::seeded::with_seed(&train_device, config.loader.seed, || {
        let backbone = config.backbone.init(&train_device)?;
        let model = build_model(config, backbone, &train_device)?;
        crate::seeded::materialize(&model);
        Ok::<_, Error>(model)
    })?;
    let architecture = serde_json::to_string(&config.backbone).unwrap_or_default();
    train_model(config, model, &architecture, dataset, device, options)
}

/// The backbone of `config`, initialised exactly as [`pretrain`] initialises it (same seed,
/// same weights), on `device`'s autodiff counterpart: the random-init baseline of an
/// evaluation.
pub fn init_backbone(config: &PretrainConfig, device: &Device) -> Result<Backbone> {
    let train_device = device.clone().autodiff();
    crate::seeded::with_seed(&train_device, config.loader.seed, || {
        let backbone = config.backbone.init(&train_device)?;
        crate::seeded::materialize(&backbone);
        Ok(backbone)
    })
}

/// Builds the joint-embedding model of `config` around `backbone`.
pub fn build_model<E: Encoder>(
    config: &PretrainConfig,
    backbone: E,
    device: &Device,
) -> Result<SelfSupervised<E>> {
    let arch = JointEmbeddingConfig::for_objective(
        &config.objective,
        backbone.feature_dim(),
        config.head_width,
    );
    let embedding_dim = arch.projector.output_dim();
    let embedding = arch.init(backbone)?;
    let objective = config
        .objective
        .init(embedding_dim, &device.clone().autodiff())?;
    SelfSupervised::new(embedding, objective)
}

/// Pretrains any [`Encoder`] (e.g. your own burn module) with the objective, views, optimiser
/// and schedules of `config`. `architecture` describes the encoder; a checkpoint made with
/// another description is refused on resume. `device` is the plain device; training runs on
/// its autodiff counterpart, where `backbone` must already live.
pub fn pretrain_encoder<E: Encoder>(
    config: &PretrainConfig,
    backbone: E,
    architecture: &str,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    options: PretrainOptions,
) -> Result<Pretrained<E>> {
    config.check()?;
    let train_device = device.clone().autodiff();
    let model = crate::seeded::with_seed(&train_device, config.loader.seed, || {
        let model = build_model(config, backbone, &train_device)?;
        crate::seeded::materialize(&model);
        Ok::<_, Error>(model)
    })?;
    train_model(config, model, architecture, dataset, device, options)
}

/// The loop shared by [`pretrain_with`] and [`pretrain_encoder`], on a built model.
fn train_model<E: Encoder>(
    config: &PretrainConfig,
    mut model: SelfSupervised<E>,
    architecture: &str,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    mut options: PretrainOptions,
) -> Result<Pretrained<E>> {
    let train_device = device.clone().autodiff();
    if crate::device::is_cpu(device) {
        // Reuse freed activations instead of faulting in fresh pages every step.
        crate::allocator::retain_freed_memory();
    }
    let loader = ViewLoader::new(dataset, config.views.clone(), config.loader.clone(), device)?;
    let num_global = config.views.num_global();
    let steps_per_epoch = loader.batches_per_epoch();
    let total_steps = steps_per_epoch * config.epochs;
    let peak = config.lr.peak(config.loader.batch_size);
    let schedule = WarmupCosine::new(peak, config.lr.warmup_epochs * steps_per_epoch, total_steps)?
        .with_final_lr(config.lr.final_lr.min(peak))?;
    let architecture = format!(
        "{architecture}; features {}; {}; head width {}",
        model.embedding.online.backbone.feature_dim(),
        config.objective.name(),
        config.head_width
    );
    let mut state = StepState {
        optimizer: config.optimizer.init()?,
        objective: config.objective.initial_state(num_global)?,
        ema: model
            .embedding
            .target
            .is_some()
            .then(|| EmaSchedule::new(config.ema_tau, total_steps))
            .transpose()?,
    };
    let mut history = Vec::new();
    let mut start_epoch = 0;
    if let Some(path) = &options.resume {
        let ckpt = Checkpoint::read(path)?;
        let bad = |reason: String| Error::Checkpoint {
            path: path.display().to_string(),
            reason,
        };
        if ckpt.meta.architecture != architecture {
            return Err(bad(format!(
                "made for another architecture ({}), not {architecture}",
                ckpt.meta.architecture
            )));
        }
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
            .map_err(|e| bad(format!("model: {e}")))?;
        model = model
            .try_load_record(record)
            .map_err(|e| bad(format!("model does not fit: {e}")))?;
        let optim = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(ckpt.optimizer))
            .map_err(|e| bad(format!("optimizer: {e}")))?;
        state.optimizer = state.optimizer.load_record(optim);
        state.objective.step = ckpt.meta.step;
        if let Some(q) = &ckpt.meta.queue {
            state.objective.queue = Some(EmbeddingQueue::restore(q, &train_device)?);
        }
        history = ckpt.meta.history;
        start_epoch = ckpt.meta.epochs_completed;
    }
    let output_dir = config.output_dir.clone();
    if let Some(dir) = &output_dir {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let mut metrics = output_dir
        .as_ref()
        .map(|d| MetricsWriter::append(d.join(METRICS_FILE)))
        .transpose()?;
    let progress = config.progress.then(|| {
        let bar = indicatif::ProgressBar::new(total_steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps, {elapsed_precise} elapsed, ETA {eta_precise} | {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_position((start_epoch * steps_per_epoch) as u64);
        bar
    });
    let warn = |message: String| match &progress {
        Some(bar) if !bar.is_hidden() => bar.println(format!("warning: {message}")),
        _ => eprintln!("warning: {message}"),
    };
    let embedding_dim = model.embedding.online.projector.output_dim().max(1);
    let mut checkpoint_path = None;
    let mut stopped = false;
    for epoch in start_epoch..config.epochs {
        let epoch_start = Instant::now();
        let (mut loss_sum, mut std_sum, mut gap_sum) = (0.0, 0.0, 0.0);
        let mut steps_done = 0usize;
        let mut images = 0usize;
        let mut last_lr = 0.0;
        let mut last_rank = None;
        if let Some(bar) = &progress {
            bar.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
        }
        let mut step_start = Instant::now();
        for batch in loader.epoch(epoch as u64) {
            let batch = batch?;
            let step = state.objective.step;
            let lr = schedule.lr(step);
            let rank_view = (config.monitor.every_steps > 0
                && step.is_multiple_of(config.monitor.every_steps))
            .then(|| batch.views[0].clone());
            let (next, report) = train_step(model, &batch.views, num_global, lr, &mut state)
                .map_err(|e| Error::TrainingStopped {
                    step,
                    epoch,
                    reason: e.to_string(),
                })?;
            model = next;
            if !report.loss.is_finite() {
                return Err(Error::TrainingStopped {
                    step,
                    epoch,
                    reason: format!("non-finite loss {}", report.loss),
                });
            }
            let effective_rank = match rank_view {
                Some(view) => {
                    let features = model.embedding.online.backbone.valid().encode(view);
                    Some(
                        effective_rank(features).map_err(|e| Error::TrainingStopped {
                            step,
                            epoch,
                            reason: e.to_string(),
                        })?,
                    )
                }
                None => None,
            };
            let seconds = step_start.elapsed().as_secs_f64();
            step_start = Instant::now();
            let m = StepMetrics {
                kind: "step".into(),
                epoch,
                step,
                loss: f64::from(report.loss),
                lr,
                tau: report.tau,
                embedding_std: f64::from(report.collapse.embedding_std),
                energy_gap: f64::from(report.collapse.energy_gap),
                effective_rank,
                images_per_second: batch.len() as f64 / seconds.max(1e-9),
            };
            let std_floor = config.monitor.min_relative_std / (embedding_dim as f64).sqrt();
            let mut collapse = Vec::new();
            if m.embedding_std < std_floor {
                collapse.push(format!(
                    "embedding std {:.2e} below {std_floor:.2e}",
                    m.embedding_std
                ));
            }
            if m.energy_gap < config.monitor.min_energy_gap {
                collapse.push(format!(
                    "energy gap {:.4} below {}",
                    m.energy_gap, config.monitor.min_energy_gap
                ));
            }
            if let Some(r) = effective_rank
                && r < config.monitor.min_effective_rank
            {
                collapse.push(format!(
                    "effective rank {r:.2} below {}",
                    config.monitor.min_effective_rank
                ));
            }
            if !collapse.is_empty() {
                let message = format!("possible collapse at step {step}: {}", collapse.join(", "));
                if config.monitor.stop_on_collapse {
                    return Err(Error::TrainingStopped {
                        step,
                        epoch,
                        reason: message,
                    });
                }
                warn(message);
            }
            if let Some(w) = &mut metrics {
                w.write(&m)?;
            }
            if let Some(bar) = &progress {
                bar.inc(1);
                bar.set_message(format!(
                    "loss {:.4}, lr {:.4}, {:.0} img/s",
                    m.loss, m.lr, m.images_per_second
                ));
            }
            loss_sum += m.loss;
            std_sum += m.embedding_std;
            gap_sum += m.energy_gap;
            last_lr = lr;
            last_rank = effective_rank.or(last_rank);
            steps_done += 1;
            images += batch.len();
            let control = options
                .on_step
                .as_mut()
                .map_or(Control::Continue, |hook| hook(&m));
            if control == Control::Stop {
                stopped = true;
                break;
            }
        }
        if stopped {
            break;
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        let last_epoch = epoch + 1 == config.epochs;
        let knn_top1 = match &options.knn {
            Some(eval)
                if last_epoch
                    || (config.knn_every_epochs > 0
                        && (epoch + 1) % config.knn_every_epochs == 0) =>
            {
                Some(knn_accuracy(
                    &model.embedding.online.backbone,
                    eval,
                    config,
                    device,
                )?)
            }
            _ => None,
        };
        let n = steps_done.max(1) as f64;
        let em = EpochMetrics {
            kind: "epoch".into(),
            epoch,
            steps: state.objective.step,
            loss: loss_sum / n,
            lr: last_lr,
            embedding_std: std_sum / n,
            energy_gap: gap_sum / n,
            effective_rank: last_rank,
            knn_top1,
            images_per_second: images as f64 / seconds.max(1e-9),
            seconds,
        };
        if let Some(w) = &mut metrics {
            w.write(&em)?;
        }
        if let Some(bar) = &progress {
            let line = format!(
                "epoch {}/{}: loss {:.4}, {:.0} img/s{}",
                epoch + 1,
                config.epochs,
                em.loss,
                em.images_per_second,
                em.knn_top1
                    .map(|a| format!(", kNN top-1 {:.2}%", 100.0 * a))
                    .unwrap_or_default()
            );
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        if let Some(hook) = &mut options.on_epoch {
            hook(&em);
        }
        history.push(em);
        let due = last_epoch
            || (config.checkpoint_every_epochs > 0
                && (epoch + 1) % config.checkpoint_every_epochs == 0);
        if let (Some(dir), true) = (&output_dir, due) {
            let path = dir.join(CHECKPOINT_FILE);
            checkpoint(&model, &state, config, epoch + 1, &history, &architecture)?
                .write_atomic(&path)?;
            checkpoint_path = Some(path);
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    Ok(Pretrained {
        model,
        history,
        steps: state.objective.step,
        checkpoint: checkpoint_path,
    })
}

/// Rebuilds the model of a checkpoint made by [`pretrain`] (built-in backbone) on `device`'s
/// autodiff counterpart, with its weights; also returns the checkpoint's metadata.
pub fn load_checkpoint(
    path: impl AsRef<std::path::Path>,
    device: &Device,
) -> Result<(SelfSupervised<Backbone>, CheckpointMeta)> {
    let path = path.as_ref();
    let ckpt = Checkpoint::read(path)?;
    let bad = |reason: String| Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    let config = &ckpt.meta.config;
    let train_device = device.clone().autodiff();
    let backbone = config.backbone.init(&train_device)?;
    let model = build_model(config, backbone, &train_device)?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
        .map_err(|e| bad(format!("model: {e}")))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| bad(format!("model does not fit its configuration: {e}")))?;
    Ok((model, ckpt.meta))
}

/// Snapshot of the training state after `epochs_completed` epochs.
fn checkpoint<E: Encoder>(
    model: &SelfSupervised<E>,
    state: &StepState,
    config: &PretrainConfig,
    epochs_completed: usize,
    history: &[EpochMetrics],
    architecture: &str,
) -> Result<Checkpoint> {
    let record_error = |what: &str, e: String| Error::Checkpoint {
        path: "<memory>".into(),
        reason: format!("{what} could not be serialised: {e}"),
    };
    let model_bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| record_error("model", e.to_string()))?;
    let optimizer_bytes = state
        .optimizer
        .to_record()
        .into_bytes()
        .map_err(|e| record_error("optimizer", e.to_string()))?;
    Ok(Checkpoint {
        meta: CheckpointMeta {
            config: config.clone(),
            epochs_completed,
            step: state.objective.step,
            queue: state
                .objective
                .queue
                .as_ref()
                .map(EmbeddingQueue::snapshot)
                .transpose()?,
            history: history.to_vec(),
            architecture: architecture.to_string(),
        },
        model: model_bytes.to_vec(),
        optimizer: optimizer_bytes.to_vec(),
    })
}

/// kNN top-1 of `backbone`'s features on the evaluation data.
pub fn knn_accuracy<E: Encoder>(
    backbone: &E,
    eval: &KnnEvaluation,
    config: &PretrainConfig,
    device: &Device,
) -> Result<f64> {
    let backbone = backbone.valid();
    let bank = extract_features(
        &backbone,
        eval.bank.clone(),
        &eval.transform,
        eval.batch_size,
        device,
    )?;
    let queries = extract_features(
        &backbone,
        eval.queries.clone(),
        &eval.transform,
        eval.batch_size,
        device,
    )?;
    let missing = |what: &str| Error::MissingInput {
        context: "kNN evaluation".into(),
        what: format!("labels of the {what} images"),
    };
    let bank_labels = bank.labels.ok_or_else(|| missing("bank"))?;
    let query_labels = queries.labels.ok_or_else(|| missing("query"))?;
    let classes = eval.bank.classes().len().max(eval.queries.classes().len());
    let knn = KnnClassifier::new(bank.features, bank_labels, classes, config.knn)?;
    Ok(knn.evaluate(queries.features, &query_labels)?.top1)
}
