//! The parallel, prefetching loader: batches of augmented views built on worker threads,
//! shuffled per epoch from a seed, delivered in order as tensors on the target device.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::dataset::ImageDataset;
use crate::augment::{AugmentRng, HostMasks, Masks, ViewTransform};
use crate::distributed::Shard;
use crate::error::{Error, Result};

/// How batches are formed and built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle the images every epoch (from `seed` and the epoch number).
    pub shuffle: bool,
    /// Seed of the shuffles and of every augmentation.
    pub seed: u64,
    /// Leave out the last, smaller batch of an epoch (the usual choice for pretraining,
    /// since batch statistics of a tiny batch are noisy).
    pub drop_last: bool,
    /// Worker threads building batches; 0 means one per core.
    pub workers: usize,
    /// Batches built ahead of the one being consumed; 0 means twice the workers.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            shuffle: true,
            seed: 0,
            drop_last: true,
            workers: 0,
            prefetch: 0,
        }
    }
}

impl LoaderConfig {
    /// Every image once, in dataset order, in batches of `batch_size` (the last one smaller):
    /// the configuration for evaluation.
    pub fn in_order(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            workers: 0,
            prefetch: 0,
        }
    }
}

/// `n`, or the number of cores when `n == 0`.
pub(crate) fn resolve_threads(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// A batch on the host: one `[batch, 3, s, s]` buffer per view.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Per view, `batch * 3 * s * s` normalised values.
    pub views: Vec<Vec<f32>>,
    /// Per view, its side length `s`.
    pub view_sizes: Vec<usize>,
    /// Number of leading global views.
    pub num_global: usize,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// Their labels, when the dataset has them.
    pub labels: Option<Vec<usize>>,
    /// The batch's patch masks, when the transform draws them.
    pub masks: Option<HostMasks>,
}

/// A batch of views on the device.
#[derive(Debug, Clone)]
pub struct ViewBatch {
    /// One `[batch, 3, s, s]` tensor per view, global views first.
    pub views: Vec<Tensor<4>>,
    /// Number of leading global views.
    pub num_global: usize,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// Their labels, when the dataset has them.
    pub labels: Option<Vec<usize>>,
    /// The batch's patch masks, when the transform draws them.
    pub masks: Option<Masks>,
}

impl HostBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// `true` for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Moves the views to `device` as tensors.
    pub fn to_device(self, device: &Device) -> ViewBatch {
        let b = self.indices.len();
        let views = self
            .views
            .into_iter()
            .zip(&self.view_sizes)
            .map(|(data, &s)| Tensor::from_data(TensorData::new(data, [b, 3, s, s]), device))
            .collect();
        ViewBatch {
            views,
            num_global: self.num_global,
            masks: self.masks.as_ref().map(|m| m.to_device(b, device)),
            indices: self.indices,
            labels: self.labels,
        }
    }
}

impl ViewBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// `true` for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The labels as an integer tensor on `device`, when the dataset has them.
    pub fn label_tensor(&self, device: &Device) -> Option<Tensor<1, Int>> {
        self.labels.as_ref().map(|l| {
            let data: Vec<i64> = l.iter().map(|&v| v as i64).collect();
            Tensor::from_data(TensorData::new(data, [l.len()]), device)
        })
    }
}

/// Builds batches of augmented views from a dataset. See [`ViewLoader::epoch`].
#[derive(Clone)]
pub struct ViewLoader {
    dataset: Arc<dyn ImageDataset>,
    transform: Arc<ViewTransform>,
    config: LoaderConfig,
    device: Device,
    shard: Shard,
}

impl ViewLoader {
    /// Checks everything that can be checked before training: the transform's parameters, a
    /// non-empty dataset, `1 <= batch_size <= len`, and (when the dataset knows its image
    /// sizes) that the images are large enough for every view.
    pub fn new(
        dataset: Arc<dyn ImageDataset>,
        transform: ViewTransform,
        config: LoaderConfig,
        device: &Device,
    ) -> Result<Self> {
        transform.validate()?;
        if dataset.is_empty() {
            return Err(Error::InvalidDataset {
                path: "loader".into(),
                reason: "the dataset contains no images".into(),
            });
        }
        if config.batch_size == 0 || config.batch_size > dataset.len() {
            return Err(Error::invalid_config(
                "batch_size",
                config.batch_size,
                format!("between 1 and the dataset size {}", dataset.len()),
            ));
        }
        if let Some((w, h)) = dataset.min_image_size() {
            transform.check_source_size(w, h, || {
                format!("(smallest in the dataset, e.g. {})", dataset.source_name(0))
            })?;
        }
        Ok(Self {
            dataset,
            transform: Arc::new(transform),
            config,
            device: device.clone(),
            shard: Shard::default(),
        })
    }

    /// The loader of one rank: every batch holds only `shard`'s images of the global batch
    /// of `batch_size` ([`Shard`]), with the views and masks one process would draw for them.
    /// The world size must divide the batch size, and the last, smaller batch is dropped.
    pub fn with_shard(self, shard: Shard) -> Result<Self> {
        shard.local_batch(self.config.batch_size)?;
        if shard.size > 1 && !self.config.drop_last {
            return Err(Error::invalid_config(
                "loader.drop_last",
                false,
                "true when training on more than one rank (every rank needs a full share)",
            ));
        }
        Ok(Self { shard, ..self })
    }

    /// This loader's rank's part of each global batch.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn ImageDataset> {
        &self.dataset
    }

    /// The view transform.
    pub fn transform(&self) -> &ViewTransform {
        &self.transform
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of dataset indices in `epoch` (a seeded permutation, or `0..len`).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            AugmentRng::stream(&[self.config.seed, epoch, u64::MAX]).shuffle(&mut order);
        }
        order
    }

    /// Builds one batch of the given dataset indices on the calling thread.
    pub fn build_batch(&self, epoch: u64, indices: &[usize]) -> Result<HostBatch> {
        build_batch(
            &*self.dataset,
            &self.transform,
            self.config.seed,
            epoch,
            indices,
            MaskRows::whole(indices),
        )
    }

    /// The batches of `epoch`, built on worker threads ahead of use and yielded in order.
    /// The same seed and epoch give the same batches and views, whatever the thread count.
    pub fn epoch(&self, epoch: u64) -> Batches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` starting at batch `first_batch` (to resume mid-epoch).
    pub fn epoch_from(&self, epoch: u64, first_batch: usize) -> Batches {
        let order = Arc::new(self.order(epoch));
        let end = self.batches_per_epoch();
        let workers = resolve_threads(self.config.workers);
        let window = if self.config.prefetch == 0 {
            2 * workers
        } else {
            self.config.prefetch
        };
        let gate = Arc::new(Gate {
            consumed: Mutex::new(first_batch),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let next = Arc::new(AtomicUsize::new(first_batch));
        let (tx, rx) = sync_channel(window);
        let handles = (0..workers.min(end.saturating_sub(first_batch)).max(1))
            .map(|worker| {
                let job = WorkerJob {
                    worker,
                    dataset: self.dataset.clone(),
                    transform: self.transform.clone(),
                    order: order.clone(),
                    batch_size: self.config.batch_size,
                    shard: self.shard,
                    seed: self.config.seed,
                    epoch,
                    end,
                    window,
                    next: next.clone(),
                    gate: gate.clone(),
                    tx: tx.clone(),
                };
                std::thread::spawn(move || job.run())
            })
            .collect();
        Batches {
            rx: Some(rx),
            pending: BTreeMap::new(),
            next: first_batch,
            end,
            gate,
            handles,
            device: self.device.clone(),
        }
    }
}

/// Which masks a batch takes: rows `start..start + len` of the masks drawn for a global batch
/// of `global` images whose first image is `first` (so a rank's shard gets the rows one
/// process would give those images).
struct MaskRows {
    first: u64,
    global: usize,
    start: usize,
}

impl MaskRows {
    /// The masks of a batch that is its own global batch.
    fn whole(indices: &[usize]) -> Self {
        Self {
            first: indices.first().map_or(0, |&i| i as u64),
            global: indices.len(),
            start: 0,
        }
    }
}

/// Decodes and augments the images at `indices` into one host batch.
fn build_batch(
    dataset: &dyn ImageDataset,
    transform: &ViewTransform,
    seed: u64,
    epoch: u64,
    indices: &[usize],
    mask_rows: MaskRows,
) -> Result<HostBatch> {
    let sizes = transform.view_sizes();
    let b = indices.len();
    let mut views: Vec<Vec<f32>> = sizes.iter().map(|s| vec![0.0; b * 3 * s * s]).collect();
    let mut labels = Vec::with_capacity(b);
    for (slot, &index) in indices.iter().enumerate() {
        let image = dataset.image(index)?;
        transform
            .check_source_size(image.width(), image.height(), || dataset.source_name(index))?;
        let mut outputs: Vec<&mut [f32]> = views
            .iter_mut()
            .zip(&sizes)
            .map(|(buffer, s)| {
                let len = 3 * s * s;
                &mut buffer[slot * len..(slot + 1) * len]
            })
            .collect();
        transform.apply(&image, [seed, epoch, index as u64], &mut outputs)?;
        labels.push(dataset.label(index));
    }
    let labels = labels.into_iter().collect::<Option<Vec<usize>>>();
    let masks = transform.masking.as_ref().map(|m| {
        let MaskRows {
            first,
            global,
            start,
        } = mask_rows;
        let drawn = m.draw(sizes[0], global, [seed, epoch, first]);
        if global == b {
            drawn
        } else {
            drawn.rows(start, b)
        }
    });
    Ok(HostBatch {
        masks,
        views,
        view_sizes: sizes,
        num_global: transform.num_global(),
        indices: indices.to_vec(),
        labels,
    })
}

/// Limits how far workers run ahead of the consumer.
struct Gate {
    consumed: Mutex<usize>,
    changed: Condvar,
    stop: AtomicBool,
}

struct WorkerJob {
    worker: usize,
    dataset: Arc<dyn ImageDataset>,
    transform: Arc<ViewTransform>,
    order: Arc<Vec<usize>>,
    batch_size: usize,
    shard: Shard,
    seed: u64,
    epoch: u64,
    end: usize,
    window: usize,
    next: Arc<AtomicUsize>,
    gate: Arc<Gate>,
    tx: SyncSender<(usize, Result<HostBatch>)>,
}

impl WorkerJob {
    fn run(self) {
        loop {
            let batch = self.next.fetch_add(1, Ordering::Relaxed);
            if batch >= self.end {
                return;
            }
            {
                let mut consumed = match self.gate.consumed.lock() {
                    Ok(c) => c,
                    Err(_) => return,
                };
                while batch >= *consumed + self.window && !self.gate.stop.load(Ordering::Relaxed) {
                    consumed = match self.gate.changed.wait(consumed) {
                        Ok(c) => c,
                        Err(_) => return,
                    };
                }
            }
            if self.gate.stop.load(Ordering::Relaxed) {
                return;
            }
            let global_start = batch * self.batch_size;
            let (start, stop) = if self.shard.size > 1 {
                let rows = self.shard.positions(batch, self.batch_size);
                (rows.start, rows.end)
            } else {
                (
                    global_start,
                    (global_start + self.batch_size).min(self.order.len()),
                )
            };
            let mask_rows = MaskRows {
                first: self.order[global_start] as u64,
                global: (global_start + self.batch_size).min(self.order.len()) - global_start,
                start: start - global_start,
            };
            // A panic in a dataset or decoder must reach the consumer as an error: a dead
            // worker would otherwise leave it waiting for this batch forever.
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                build_batch(
                    &*self.dataset,
                    &self.transform,
                    self.seed,
                    self.epoch,
                    &self.order[start..stop],
                    mask_rows,
                )
            }));
            let result = built.unwrap_or_else(|panic| {
                Err(Error::Worker(format!(
                    "loader worker {} panicked while building batch {batch}: {}",
                    self.worker,
                    panic_message(&*panic)
                )))
            });
            if self.tx.send((batch, result)).is_err() {
                return;
            }
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The batches of one epoch, in order; see [`ViewLoader::epoch`]. Dropping it stops the
/// workers.
pub struct Batches {
    rx: Option<Receiver<(usize, Result<HostBatch>)>>,
    pending: BTreeMap<usize, Result<HostBatch>>,
    next: usize,
    end: usize,
    gate: Arc<Gate>,
    handles: Vec<JoinHandle<()>>,
    device: Device,
}

impl Batches {
    /// The next batch on the host, without moving it to the device.
    pub fn next_host(&mut self) -> Option<Result<HostBatch>> {
        if self.next >= self.end {
            return None;
        }
        let rx = self.rx.as_ref()?;
        let result = loop {
            if let Some(result) = self.pending.remove(&self.next) {
                break result;
            }
            match rx.recv() {
                Ok((i, result)) => {
                    self.pending.insert(i, result);
                }
                Err(_) => {
                    break Err(Error::Worker(format!(
                        "workers stopped before batch {} was built",
                        self.next
                    )));
                }
            }
        };
        self.next += 1;
        if let Ok(mut consumed) = self.gate.consumed.lock() {
            *consumed = self.next;
        }
        self.gate.changed.notify_all();
        if result.is_err() {
            // Stop at the first error: later batches would be built for nothing.
            self.end = self.next;
        }
        Some(result)
    }

    /// Batches left in this epoch.
    pub fn remaining(&self) -> usize {
        self.end - self.next
    }
}

impl Iterator for Batches {
    type Item = Result<ViewBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let device = self.device.clone();
        self.next_host()
            .map(|r| r.map(|batch| batch.to_device(&device)))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.gate.stop.store(true, Ordering::Relaxed);
        self.gate.changed.notify_all();
        // Dropping the receiver fails any blocked send, so every worker returns.
        self.rx = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
