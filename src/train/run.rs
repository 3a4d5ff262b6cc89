//! The pretraining loop: loader -> schedules (and their hook) -> training step -> monitors ->
//! metrics -> checkpoints, with exact resume. Generic over the method, so a method written
//! outside the crate trains through it unchanged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::OptimizerRecord;
use burn::tensor::{Bytes, Device};

use super::checkpoint::{Checkpoint, CheckpointMeta};
use super::config::PretrainConfig;
use super::metrics::{EpochMetrics, MetricsWriter, StepMetrics};
use super::monitor::collapse_signals;
use super::pretrain::{
    CHECKPOINT_FILE, Control, KnnEvaluation, METRICS_FILE, PretrainOptions, Pretrained,
    knn_accuracy, load_weights,
};
use super::progress::Reporter;
use super::schedules::Schedules;
use crate::backbone::Encoder;
use crate::data::{ImageDataset, ViewBatch, ViewLoader};
use crate::distributed;
use crate::error::{Error, Result};
use crate::eval::effective_rank;
use crate::method::{Method, MethodConfig, Progress, StepContext};
use crate::model::BackboneBranch;
use crate::optim::{GroupedOptimizer, ParamGroups};
use crate::step::{SelfSupervised, global_embeddings, train_step_masked};

/// The state of a run between steps, apart from the model (which moves through every step).
struct Run<'a, C: MethodConfig> {
    config: &'a PretrainConfig<C>,
    device: Device,
    loader: ViewLoader,
    steps_per_epoch: usize,
    schedules: Schedules,
    optimizer: GroupedOptimizer,
    step: usize,
    history: Vec<EpochMetrics>,
    metrics: Option<MetricsWriter>,
    reporter: Reporter,
    architecture: String,
    dataset_len: usize,
    embedding_dim: usize,
    options: PretrainOptions,
    checkpoint: Option<PathBuf>,
}

/// Sums of one epoch's step metrics.
#[derive(Default)]
struct EpochTally {
    loss: f64,
    embedding_std: f64,
    energy_gap: f64,
    steps: usize,
    images: usize,
    last_lr: f64,
    last_rank: Option<f64>,
    seconds: f64,
    stopped: bool,
}

/// Trains `model` as `config` says; the loop of [`super::pretrain_encoder`].
pub(crate) fn train_model<E: Encoder, C: MethodConfig>(
    config: &PretrainConfig<C>,
    model: SelfSupervised<E, C::Method>,
    architecture: &str,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    options: PretrainOptions,
) -> Result<Pretrained<E, C::Method>> {
    #[cfg(feature = "flex")]
    if crate::device::is_cpu(device) {
        // Reuse freed activations instead of faulting in fresh pages every step.
        crate::kernels::allocator::retain_freed_memory();
    }
    let world = options.world;
    let _active = distributed::activate(distributed::Active {
        world,
        sync_batch_norm: config.distributed.sync_batch_norm,
    });
    let trained = train_on_rank(config, model, architecture, dataset, device, options);
    match trained {
        // A rank that stops alone would leave the others waiting in a collective forever.
        Err(e) if world.is_distributed() => world.abort(&e),
        trained => trained,
    }
}

/// [`train_model`] on this rank of its world.
fn train_on_rank<E: Encoder, C: MethodConfig>(
    config: &PretrainConfig<C>,
    model: SelfSupervised<E, C::Method>,
    architecture: &str,
    dataset: Arc<dyn ImageDataset>,
    device: &Device,
    options: PretrainOptions,
) -> Result<Pretrained<E, C::Method>> {
    // A target asked of a method without one fails here, not after the first epoch.
    if model.embedding.backbone_of(config.eval_encoder).is_none() {
        return Err(BackboneBranch::missing_target(
            "eval_encoder",
            model.method.name(),
        ));
    }
    let mut run = Run::new(config, &model, architecture, dataset, device, options)?;
    let (mut model, start_epoch) = run.resume(model)?;
    run.open_outputs(start_epoch)?;
    if model.method.requirements().initial_pass && start_epoch == 0 {
        model = run.initial_pass(model)?;
    }
    for epoch in start_epoch..config.epochs {
        model = SelfSupervised {
            method: model.method.start_epoch(epoch, config.loader.seed)?,
            ..model
        };
        let (next, tally) = run.train_epoch(model, epoch)?;
        model = next;
        if tally.stopped {
            break;
        }
        run.finish_epoch(&model, epoch, tally)?;
    }
    run.reporter.finish();
    Ok(Pretrained {
        model,
        history: run.history,
        steps: run.step,
        checkpoint: run.checkpoint,
    })
}

impl<'a, C: MethodConfig> Run<'a, C> {
    fn new<E: Encoder>(
        config: &'a PretrainConfig<C>,
        model: &SelfSupervised<E, C::Method>,
        architecture: &str,
        dataset: Arc<dyn ImageDataset>,
        device: &Device,
        options: PretrainOptions,
    ) -> Result<Self> {
        let dataset_len = dataset.len();
        let loader = ViewLoader::new(dataset, config.views.clone(), config.loader.clone(), device)?
            .with_shard(options.world.shard())?;
        let steps_per_epoch = loader.batches_per_epoch();
        let schedules = Schedules::new(config, steps_per_epoch)?;
        let optimizer = Self::optimizer(config, model, &schedules)?;
        let architecture = format!(
            "{architecture}; features {}; {}; head width {}",
            model.embedding.online.backbone.feature_dim(),
            config.method.name(),
            config.head_width
        );
        Ok(Self {
            config,
            device: device.clone(),
            loader,
            steps_per_epoch,
            schedules,
            optimizer,
            step: 0,
            history: Vec::new(),
            metrics: None,
            reporter: Reporter::new(false, 0, 0, config.epochs),
            architecture,
            dataset_len,
            embedding_dim: model
                .embedding
                .online
                .projector
                .output_dim()
                .unwrap_or_else(|| model.embedding.online.backbone.feature_dim()),
            options,
            checkpoint: None,
        })
    }

    /// The optimiser over `model`'s parameter groups (by parameter id: built again after a
    /// checkpoint restored the ids).
    fn optimizer<E: Encoder>(
        config: &PretrainConfig<C>,
        model: &SelfSupervised<E, C::Method>,
        schedules: &Schedules,
    ) -> Result<GroupedOptimizer> {
        GroupedOptimizer::new(
            &config.optimizer,
            &parameter_groups(config, model),
            schedules.peak_lr(),
        )
    }

    /// Restores model, optimiser, step and history from `options.resume`; returns the model
    /// and the epoch to start at.
    fn resume<E: Encoder>(
        &mut self,
        model: SelfSupervised<E, C::Method>,
    ) -> Result<(SelfSupervised<E, C::Method>, usize)> {
        let Some(path) = self.options.resume.clone() else {
            return Ok((model, 0));
        };
        let ckpt = Checkpoint::<C>::read_as(&path)?;
        let name = path.display().to_string();
        let bad = |reason: String| Error::Checkpoint {
            path: name.clone(),
            reason,
        };
        if ckpt.meta.architecture != self.architecture {
            return Err(bad(format!(
                "made for another architecture ({}), not {}",
                ckpt.meta.architecture, self.architecture
            )));
        }
        if ckpt.meta.epochs_completed > self.config.epochs {
            return Err(bad(format!(
                "already trained {} epochs, more than this run's {}",
                ckpt.meta.epochs_completed, self.config.epochs
            )));
        }
        let model = load_weights(model, ckpt.model, &name)?;
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(ckpt.optimizer))
            .map_err(|e| bad(format!("optimizer: {e}")))?;
        // The groups name parameters by id, which the checkpoint just restored.
        self.optimizer = Self::optimizer(self.config, &model, &self.schedules)?.load_record(record);
        self.step = ckpt.meta.step;
        self.history = ckpt.meta.history;
        Ok((model, ckpt.meta.epochs_completed))
    }

    /// Creates the output folder, opens the metrics (dropping what the resumed checkpoint does
    /// not cover) and the progress display.
    fn open_outputs(&mut self, start_epoch: usize) -> Result<()> {
        if !self.options.world.is_root() {
            self.reporter = Reporter::silent(self.config.epochs);
            return Ok(());
        }
        if let Some(dir) = &self.config.output_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            let path = dir.join(METRICS_FILE);
            self.metrics = Some(if self.options.resume.is_some() {
                MetricsWriter::resume(path, self.step, start_epoch)?
            } else {
                MetricsWriter::resume(path, 0, 0)?
            });
        }
        self.reporter = Reporter::new(
            self.config.progress,
            self.steps_per_epoch * self.config.epochs,
            self.step,
            self.config.epochs,
        );
        Ok(())
    }

    /// One pass over the data without optimiser steps, feeding every batch's embeddings to
    /// the method (DeepCluster-v2 fills its memory bank). Its views are drawn for an epoch
    /// number training never uses.
    fn initial_pass<E: Encoder>(
        &mut self,
        model: SelfSupervised<E, C::Method>,
    ) -> Result<SelfSupervised<E, C::Method>> {
        self.reporter.line(format!(
            "{}: initial pass over the data",
            self.config.method.name()
        ));
        let SelfSupervised {
            embedding,
            mut method,
        } = model;
        let requirements = method.requirements();
        let values = self
            .schedules
            .values(&method, &self.progress(0), embedding.target.is_some());
        // As under `torch.no_grad()`: batch norm keeps its training behaviour (batch
        // statistics, running statistics updated), but nothing is tracked for a backward pass
        // that never comes; on the autodiff device every forward pass would otherwise keep its
        // activations (24 GB after 175 CIFAR batches of a ResNet-18 at width 16).
        let untracked = embedding.clone().no_grad();
        for batch in self.loader.epoch(u64::MAX) {
            let batch = batch?;
            let views: Vec<_> = batch.views.iter().map(|v| v.clone().autodiff()).collect();
            let local = untracked.embed_batch(
                &views,
                batch.num_global,
                &requirements,
                batch.masks.as_ref(),
            )?;
            let (embeddings, indices) = global_embeddings(local, &requirements, &batch.indices)?;
            let context = StepContext {
                progress: self.progress(0),
                values: &values,
                indices: &indices,
            };
            method = method.after_step(&embeddings, &context)?;
        }
        Ok(SelfSupervised { embedding, method })
    }

    fn progress(&self, epoch: usize) -> Progress {
        Progress {
            step: self.step,
            epoch,
            steps_per_epoch: self.steps_per_epoch,
            epochs: self.config.epochs,
        }
    }

    /// The steps of `epoch`, until the data ends or a hook stops the run.
    fn train_epoch<E: Encoder>(
        &mut self,
        mut model: SelfSupervised<E, C::Method>,
        epoch: usize,
    ) -> Result<(SelfSupervised<E, C::Method>, EpochTally)> {
        self.reporter.start_epoch(epoch);
        let started = Instant::now();
        let mut tally = EpochTally::default();
        let mut step_start = Instant::now();
        for batch in self.loader.epoch(epoch as u64) {
            let batch = batch?;
            let images = batch.len() * self.options.world.size();
            let (next, mut m) = self.step(model, batch, epoch)?;
            model = next;
            m.images_per_second = images as f64 / step_start.elapsed().as_secs_f64().max(1e-9);
            step_start = Instant::now();
            self.record_step(&m)?;
            tally.loss += m.loss;
            tally.embedding_std += m.embedding_std;
            tally.energy_gap += m.energy_gap;
            tally.last_lr = m.lr;
            tally.last_rank = m.effective_rank.or(tally.last_rank);
            tally.steps += 1;
            tally.images += images;
            let control = self
                .options
                .on_step
                .as_mut()
                .map_or(Control::Continue, |hook| hook(&m));
            if control == Control::Stop {
                tally.stopped = true;
                break;
            }
        }
        let n = tally.steps.max(1) as f64;
        tally.loss /= n;
        tally.embedding_std /= n;
        tally.energy_gap /= n;
        tally.seconds = started.elapsed().as_secs_f64();
        Ok((model, tally))
    }

    /// One step: scheduled values (through the schedule hook), the training step, the
    /// effective rank on monitored steps. Errors name the step.
    fn step<E: Encoder>(
        &mut self,
        model: SelfSupervised<E, C::Method>,
        batch: ViewBatch,
        epoch: usize,
    ) -> Result<(SelfSupervised<E, C::Method>, StepMetrics)> {
        let step = self.step;
        let at_step = |source: Error| Error::Step {
            step,
            epoch,
            source: Box::new(source),
        };
        let progress = self.progress(epoch);
        let mut values =
            self.schedules
                .values(&model.method, &progress, model.embedding.target.is_some());
        if let Some(hook) = &mut self.options.on_schedule {
            hook(&progress, &mut values);
        }
        let every = self.config.monitor.every_steps;
        let rank_view = (every > 0 && step.is_multiple_of(every)).then(|| batch.views[0].clone());
        let context = StepContext {
            progress,
            values: &values,
            indices: &batch.indices,
        };
        let (model, report) = train_step_masked(
            model,
            &batch.views,
            batch.num_global,
            batch.masks.as_ref(),
            &context,
            &mut self.optimizer,
        )
        .map_err(at_step)?;
        self.step += 1;
        let world = self.options.world;
        let check_every = self.config.distributed.check_every_steps;
        if world.is_distributed() && check_every > 0 && self.step.is_multiple_of(check_every) {
            distributed::check_same_parameters(&model, &world, step).map_err(at_step)?;
        }
        let effective_rank = rank_view
            .map(|view| effective_rank(model.embedding.online.backbone.valid().encode(view)))
            .transpose()
            .map_err(at_step)?;
        let metrics = StepMetrics {
            kind: "step".into(),
            epoch,
            step,
            loss: f64::from(report.loss),
            lr: report.values.lr,
            weight_decay: report.values.weight_decay,
            tau: report.values.ema_momentum,
            method_values: report.values.method,
            embedding_std: f64::from(report.collapse.embedding_std),
            energy_gap: f64::from(report.collapse.energy_gap),
            effective_rank,
            images_per_second: 0.0,
        };
        Ok((model, metrics))
    }

    /// Collapse monitor, metrics file and progress for one step.
    fn record_step(&mut self, m: &StepMetrics) -> Result<()> {
        let dim = self.embedding_dim;
        let signals = collapse_signals(&self.config.monitor, m, dim);
        if !signals.is_empty() {
            let message = format!(
                "possible collapse at step {}: {}",
                m.step,
                signals.join(", ")
            );
            if self.config.monitor.stop_on_collapse {
                return Err(Error::TrainingStopped {
                    step: m.step,
                    epoch: m.epoch,
                    reason: message,
                });
            }
            self.reporter.warn(message);
        }
        if let Some(w) = &mut self.metrics {
            w.write(m)?;
        }
        self.reporter.step(m);
        Ok(())
    }

    /// kNN (when due), the epoch's metrics, its line, its hook and its checkpoint (when due).
    fn finish_epoch<E: Encoder>(
        &mut self,
        model: &SelfSupervised<E, C::Method>,
        epoch: usize,
        tally: EpochTally,
    ) -> Result<()> {
        let config = self.config;
        let last_epoch = epoch + 1 == config.epochs;
        let due = |every: usize| last_epoch || (every > 0 && (epoch + 1).is_multiple_of(every));
        let knn_top1 = match &self.options.knn {
            Some(eval) if due(config.knn_every_epochs) => Some(self.knn_on_root(model, eval)?),
            _ => None,
        };
        let m = EpochMetrics {
            kind: "epoch".into(),
            epoch,
            steps: self.step,
            loss: tally.loss,
            lr: tally.last_lr,
            embedding_std: tally.embedding_std,
            energy_gap: tally.energy_gap,
            effective_rank: tally.last_rank,
            knn_top1,
            images_per_second: tally.images as f64 / tally.seconds.max(1e-9),
            seconds: tally.seconds,
        };
        if let Some(w) = &mut self.metrics {
            w.write(&m)?;
        }
        self.reporter.epoch(&m);
        if let Some(hook) = &mut self.options.on_epoch {
            hook(&m);
        }
        self.history.push(m);
        if let (Some(dir), true) = (&config.output_dir, due(config.checkpoint_every_epochs)) {
            let path = dir.join(CHECKPOINT_FILE);
            if self.options.world.is_root() {
                self.snapshot(model, epoch + 1)?.write_atomic(&path)?;
            }
            // The others wait, so a rank that goes on to resume finds the file complete.
            self.options.world.barrier();
            self.checkpoint = Some(path);
        }
        Ok(())
    }

    /// kNN top-1 of the configured backbone (online or target), computed by rank 0 and shared
    /// with every rank.
    fn knn_on_root<E: Encoder>(
        &self,
        model: &SelfSupervised<E, C::Method>,
        eval: &KnnEvaluation,
    ) -> Result<f64> {
        let world = self.options.world;
        let mut accuracy = [0.0];
        if world.is_root() {
            accuracy[0] = knn_accuracy(
                model
                    .embedding
                    .backbone_of(self.config.eval_encoder)
                    .ok_or_else(|| {
                        BackboneBranch::missing_target("eval_encoder", model.method.name())
                    })?,
                eval,
                self.config.knn,
                &self.device,
            )?;
        }
        world.broadcast(&mut accuracy);
        Ok(accuracy[0])
    }

    /// The training state after `epochs_completed` epochs.
    fn snapshot<E: Encoder>(
        &self,
        model: &SelfSupervised<E, C::Method>,
        epochs_completed: usize,
    ) -> Result<Checkpoint<C>> {
        let unserialisable = |what: &str, e: String| Error::Checkpoint {
            path: "<memory>".into(),
            reason: format!("{what} could not be serialised: {e}"),
        };
        // Batch norm keeps its latest running statistics per thread until they are synced,
        // and a record saves the synced value: sync first, so the checkpoint holds exactly
        // what the next step would use.
        let _ = model.valid();
        let model_bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| unserialisable("model", e.to_string()))?;
        let optimizer_bytes = self
            .optimizer
            .to_record()
            .into_bytes()
            .map_err(|e| unserialisable("optimizer", e.to_string()))?;
        Ok(Checkpoint {
            meta: CheckpointMeta {
                config: self.config.clone(),
                epochs_completed,
                step: self.step,
                dataset_len: self.dataset_len,
                embedding_dim: self.embedding_dim,
                history: self.history.clone(),
                architecture: self.architecture.clone(),
            },
            model: model_bytes.to_vec(),
            optimizer: optimizer_bytes.to_vec(),
        })
    }
}

/// The model's parameter groups under `config`'s optimiser: biases and normalisation
/// parameters without weight decay (when excluded), the predictor at a fixed rate (when
/// asked).
fn parameter_groups<E: Encoder, C: MethodConfig>(
    config: &PretrainConfig<C>,
    model: &SelfSupervised<E, C::Method>,
) -> ParamGroups {
    let mut groups = if config.optimizer.exclude_bias_and_norm {
        ParamGroups::rank_one_excluded(model)
    } else {
        ParamGroups::default()
    };
    if config.optimizer.predictor_fixed_lr
        && let Some(predictor) = &model.embedding.online.predictor
    {
        groups.fixed_lr = crate::optim::trainable_ids(predictor)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
    }
    groups
}
