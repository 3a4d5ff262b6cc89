//! CIFAR-10 benchmark: pretrain one method on the CIFAR-10 training images minus the validation
//! split (the last 500 images of each class), then report kNN and linear-probe top-1 on that
//! split, next to a random-init encoder of the same architecture and raw-pixel kNN, with the
//! training images/s and the peak memory of the run. `benches/cifar10.sh` runs it next to the
//! PyTorch reference (`benches/reference/cifar10_torch.py`, same recipe) for each method.
//!
//! ```text
//! tar -xJf ../shared/data/cifar10-train.tar.xz -C target/data
//! cargo run --release --example cifar10_benchmark -- --method byol --epochs 1
//! ```
//!
//! The recipe (CPU scale; one epoch of BYOL with its evaluations took 10 minutes on 2 cores):
//! - ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) at width 16 (16-32-64-128 channels,
//!   128-d features);
//! - the method's paper heads at a quarter width (`head_width = 0.25`: BYOL 1024/64 with a
//!   1024-wide predictor, SimSiam 512/512 with a 128-wide predictor, Barlow Twins and VICReg
//!   2048-2048-2048, SwAV 512/32 with 3,000 prototypes);
//! - the method's views from lightly's presets at 32 px, no blur;
//! - batch 256, SGD momentum 0.9, weight decay 5e-4, lr 0.12 x batch / 256, except VICReg:
//!   LARS (momentum 0.9, weight decay 1e-4, eta 0.02, biases and norms excluded), lr 0.3 x
//!   batch / 256 (with SGD it diverges at 0.12 and learns slowly at the 0.01 it needs);
//!   `--optimizer`, `--lr`, `--weight-decay`, `--lars-eta` change them; cosine to 0, no warmup
//!   (`--warmup`); BYOL's EMA 0.99 -> 1 (cosine);
//! - evaluation: features of the eval view (the whole 32 px image, normalised), kNN k = 200, T = 0.1,
//!   bank = the 45,000 training images, queries = the 5,000 validation images; linear probe
//!   (Adam, 30 epochs on standardised frozen features).
//!
//! Options: `--method` (any built-in method), `--epochs`, `--data DIR`, `--out FILE`
//! (JSON summary), `--limit N` (use only the first N training images per class, for a quick
//! check), `--train-only` (no final evaluation: a throughput run), `--eval-encoder online|target`
//! (which backbone the evaluations read), `--knn-every` (kNN on the
//! validation split after every epoch), `--metrics DIR`
//! (per-step loss, learning rate and images/s in `DIR/metrics.jsonl`), `--burn-kernels`
//! (burn's convolution and batch norm instead of this crate's, for before/after runs),
//! `--width`, `--batch`, `--optimizer sgd|lars`, `--lr`, `--weight-decay`, `--lars-eta`,
//! `--warmup`; for vision transformers `--vit-depth` (a ViT instead of the ResNet),
//! `--vit-width`, `--vit-pool cls|mean`, and `--decoder-depth` / `--decoder-width` for MAE's
//! decoder or I-JEPA's predictor (the 4-epoch protocol of BENCHMARKS.md: `--vit-depth 4
//! --vit-width 128 --decoder-depth 2`, decoder width 128 for MAE and 64 for I-JEPA).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use selfsup::augment::ViewTransform;
use selfsup::backbone::{BackboneConfig, ResNetConfig, Stem, VitConfig, VitPool};
use selfsup::data::{
    ImageDataset, LoaderConfig, Subset, ViewLoader, holdout_last_per_class, open_dataset,
};
use selfsup::eval::{KnnClassifier, KnnConfig, LinearProbeConfig};
use selfsup::method::{AnyMethodConfig, Preset};
use selfsup::model::BackboneBranch;
use selfsup::optim::OptimizerKind;
use selfsup::prelude::*;
use selfsup::train::{
    KnnEvaluation, OptimizerConfig, PretrainConfig, PretrainOptions, frozen_evaluation,
    init_backbone, pretrain_with,
};

#[derive(Parser, Debug)]
struct Args {
    /// Any built-in method (byol, simsiam, barlow-twins or barlow, swav, vicreg, simclr,
    /// moco, dino, deepcluster, lejepa; mae and ijepa with --vit-depth).
    #[arg(long, default_value = "byol")]
    method: String,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// The CIFAR-10 training images in class folders.
    #[arg(long, default_value = "target/data/cifar10/train")]
    data: PathBuf,
    /// Where to write the JSON summary.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Training images per class to keep (all when absent); the validation split is unchanged.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate kNN after every epoch (costs a pass over the bank each time).
    #[arg(long)]
    knn_every: bool,
    /// ResNet-18 width (first-stage channels).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// A ViT-Tiny of this many blocks (4-pixel patches, width 192, 3 heads) instead of the
    /// ResNet-18 (needed by mae and ijepa; e.g. 6 for the 4-epoch protocol on 2 cores).
    #[arg(long)]
    vit_depth: Option<usize>,
    /// Token width of the `--vit-depth` ViT (heads of 64, MLP 4 x width; default 192, ViT-Tiny's).
    #[arg(long, default_value_t = 192)]
    vit_width: usize,
    /// The ViT's pooled feature for the evaluations: `cls` (class token) or `mean` (mean of the
    /// patch tokens); default `mean` for ijepa (the paper's evaluation; its encoder has no class
    /// token to train), `cls` otherwise.
    #[arg(long)]
    vit_pool: Option<String>,
    /// Blocks of MAE's decoder or I-JEPA's predictor (default: the CIFAR preset's, 4).
    #[arg(long)]
    decoder_depth: Option<usize>,
    /// Token width of MAE's decoder or I-JEPA's predictor, heads of 32 (default: the CIFAR
    /// preset's, 256 for MAE and 96 for I-JEPA).
    #[arg(long)]
    decoder_width: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Seed of the initial weights, the views and their order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use burn's own convolution and batch norm instead of this crate's fast CPU kernels
    /// (for before/after comparisons).
    #[arg(long)]
    burn_kernels: bool,
    /// Base learning rate, scaled by batch / 256 (default: the method's CIFAR preset).
    #[arg(long)]
    lr: Option<f64>,
    /// Warmup epochs of the learning rate (linear, then cosine).
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Optimiser: `sgd` (momentum 0.9) or `lars` (momentum 0.9, biases and norms excluded);
    /// default: the method's CIFAR preset.
    #[arg(long)]
    optimizer: Option<String>,
    /// Weight decay (default: the preset's, or 5e-4 for SGD and 1e-4 for LARS when
    /// --optimizer changes the kind).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// LARS trust coefficient `eta`.
    #[arg(long, default_value_t = 0.02)]
    lars_eta: f64,
    /// Evaluate the online backbone or the momentum target's (byol, moco, dino, ijepa; the
    /// I-JEPA and DINO papers evaluate the target).
    #[arg(long, default_value = "online")]
    eval_encoder: BackboneBranch,
    /// Skip the final evaluations (kNN, linear probe, random init, raw pixels): a throughput run.
    #[arg(long)]
    train_only: bool,
    /// Directory for the per-step metrics (`metrics.jsonl`: loss, lr, images/s, ...).
    #[arg(long)]
    metrics: Option<PathBuf>,
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The method's CIFAR preset, with the decoder or predictor shape the flags ask for.
fn method(args: &Args) -> selfsup::Result<AnyMethodConfig> {
    let name = match args.method.as_str() {
        "barlow" => "barlow-twins",
        other => other,
    };
    let mut method = AnyMethodConfig::preset(name, Preset::Cifar)?;
    match &mut method {
        AnyMethodConfig::Mae(mae) => {
            mae.decoder_depth = args.decoder_depth.unwrap_or(mae.decoder_depth);
            if let Some(width) = args.decoder_width {
                mae.decoder_dim = width;
                mae.decoder_heads = (width / 32).max(1);
            }
        }
        AnyMethodConfig::Ijepa(ijepa) => {
            ijepa.predictor_depth = args.decoder_depth.unwrap_or(ijepa.predictor_depth);
            if let Some(width) = args.decoder_width {
                ijepa.predictor_dim = width;
                ijepa.predictor_heads = (width / 32).max(1);
            }
        }
        _ => {}
    }
    Ok(method)
}

/// The ResNet-18 at `--width`, or the ViT-Tiny of `--vit-depth` blocks.
fn backbone(args: &Args) -> selfsup::Result<BackboneConfig> {
    Ok(match args.vit_depth {
        Some(depth) => {
            let mut vit = VitConfig::cifar_tiny();
            vit.num_layers = depth;
            vit.hidden_dim = args.vit_width;
            vit.num_heads = (args.vit_width / 64).max(1);
            vit.mlp_dim = 4 * args.vit_width;
            let default_pool = if args.method == "ijepa" {
                "mean"
            } else {
                "cls"
            };
            vit.pool = match args.vit_pool.as_deref().unwrap_or(default_pool) {
                "cls" => VitPool::ClassToken,
                "mean" => VitPool::MeanPatch,
                other => {
                    return Err(selfsup::Error::invalid_config(
                        "--vit-pool",
                        other,
                        "cls or mean",
                    ));
                }
            };
            BackboneConfig::Vit(vit)
        }
        None => BackboneConfig::ResNet(
            ResNetConfig::resnet18()
                .with_stem(Stem::Cifar)
                .with_width(args.width),
        ),
    })
}

/// The method's optimiser, with the kind, weight decay and LARS eta the flags ask for.
fn optimizer(preset: OptimizerConfig, args: &Args) -> selfsup::Result<OptimizerConfig> {
    let mut c = match args.optimizer.as_deref() {
        None => preset,
        Some("sgd") if preset.kind != OptimizerKind::Sgd => OptimizerConfig {
            kind: OptimizerKind::Sgd,
            weight_decay: 5e-4,
            ..preset
        },
        Some("lars") if preset.kind != OptimizerKind::Lars => OptimizerConfig {
            kind: OptimizerKind::Lars,
            weight_decay: 1e-4,
            lars_eta: args.lars_eta,
            ..preset
        },
        Some("sgd" | "lars") => preset,
        Some(other) => {
            return Err(selfsup::Error::invalid_config(
                "--optimizer",
                other,
                "sgd or lars",
            ));
        }
    };
    if let Some(wd) = args.weight_decay {
        c.weight_decay = wd;
    }
    if args.optimizer.as_deref() == Some("lars") {
        c.lars_eta = args.lars_eta;
    }
    Ok(c)
}

/// Raw-pixel kNN: the normalised 32x32 eval view, flattened, as the feature.
fn raw_pixel_knn(
    bank: Arc<dyn ImageDataset>,
    queries: Arc<dyn ImageDataset>,
    transform: &ViewTransform,
    device: &Device,
) -> selfsup::Result<f64> {
    let flatten = |dataset: Arc<dyn ImageDataset>| -> selfsup::Result<(Tensor<2>, Vec<usize>)> {
        let loader = ViewLoader::new(
            dataset,
            transform.clone(),
            LoaderConfig::in_order(500),
            device,
        )?;
        let (mut parts, mut labels) = (Vec::new(), Vec::new());
        for batch in loader.epoch(0) {
            let batch = batch?;
            let images = batch.views.into_iter().next().expect("one view");
            let [b, c, h, w] = images.dims();
            parts.push(images.reshape([b, c * h * w]));
            labels.extend(batch.labels.unwrap_or_default());
        }
        Ok((Tensor::cat(parts, 0), labels))
    };
    let (bank_x, bank_y) = flatten(bank)?;
    let (query_x, query_y) = flatten(queries)?;
    let knn = KnnClassifier::new(bank_x, bank_y, 10, KnnConfig::default())?;
    Ok(knn.evaluate(query_x, &query_y)?.top1)
}

/// The training split (the first `--limit` per class, when given) and the held-out split (the
/// last 500 images of each class).
fn splits(args: &Args) -> selfsup::Result<(Arc<dyn ImageDataset>, Arc<dyn ImageDataset>)> {
    let all = open_dataset(&args.data, true)?;
    let (mut train_idx, val_idx) = holdout_last_per_class(all.as_ref(), 500)?;
    if let Some(limit) = args.limit {
        let mut per_class = vec![0usize; all.classes().len()];
        train_idx.retain(|&i| {
            let label = all.label(i).unwrap_or(0);
            per_class[label] += 1;
            per_class[label] <= limit
        });
    }
    let train: Arc<dyn ImageDataset> = Arc::new(Subset::new(all.clone(), train_idx)?);
    let val: Arc<dyn ImageDataset> = Arc::new(Subset::new(all, val_idx)?);
    Ok((train, val))
}

fn main() -> selfsup::Result<()> {
    let args = Args::parse();
    selfsup::conv::set_fast_conv(!args.burn_kernels);
    selfsup::batch_norm::set_fast_batch_norm(!args.burn_kernels);
    let started = Instant::now();
    let (train, val) = splits(&args)?;
    println!(
        "CIFAR-10 from {}: {} training images, {} validation images",
        args.data.display(),
        train.len(),
        val.len()
    );

    let method = method(&args)?;
    let backbone = backbone(&args)?;
    let mut config = PretrainConfig::cifar(method, backbone, args.epochs);
    config.optimizer = optimizer(config.optimizer.clone(), &args)?;
    config.head_width = 0.25;
    config.loader = LoaderConfig {
        batch_size: args.batch,
        seed: args.seed,
        ..LoaderConfig::default()
    };
    config.lr.warmup_epochs = args.warmup;
    config.lr.base_lr = args.lr.unwrap_or(config.lr.base_lr);
    config.knn_every_epochs = usize::from(args.knn_every);
    config.eval_encoder = args.eval_encoder;
    config.checkpoint_every_epochs = 0;
    config.output_dir = args.metrics.clone();
    config.monitor.every_steps = 0;

    let device = Device::flex();
    let eval = KnnEvaluation {
        bank: train.clone(),
        queries: val.clone(),
        transform: ViewTransform::eval(None, 32),
        batch_size: 500,
    };
    let options = PretrainOptions {
        knn: args.knn_every.then(|| eval.clone()),
        ..Default::default()
    };
    let train_start = Instant::now();
    let trained = pretrain_with(&config, train.clone(), &device, options)?;
    let run_seconds = train_start.elapsed().as_secs_f64();
    let peak_rss_training = peak_rss_mib();
    let images_per_second: Vec<f64> = trained
        .history
        .iter()
        .map(|e| e.images_per_second)
        .collect();
    let epoch_knn: Vec<Option<f64>> = trained.history.iter().map(|e| e.knn_top1).collect();
    let epoch_seconds: Vec<f64> = trained.history.iter().map(|e| e.seconds).collect();
    // Training time: the epochs' own clocks (per-epoch kNN and model set-up excluded), as in the
    // PyTorch reference.
    let train_seconds: f64 = epoch_seconds.iter().sum();
    let trained_images = (trained.steps * args.batch) as f64;

    let scores = if args.train_only {
        Scores::default()
    } else {
        final_scores(
            &trained.backbone_of(config.eval_encoder)?,
            &config,
            &eval,
            &device,
        )?
    };
    let Scores {
        knn,
        probe,
        random_knn,
        random_probe,
        pixels,
    } = scores;

    let summary = serde_json::json!({
        "tool": "selfsup",
        "method": args.method,
        "epochs": args.epochs,
        "width": args.width,
        "backbone": config.backbone,
        "method_config": config.method,
        "batch": args.batch,
        "seed": args.seed,
        "warmup_epochs": args.warmup,
        "base_lr": config.lr.base_lr,
        "optimizer": config.optimizer,
        "kernels": if args.burn_kernels { "burn" } else { "selfsup" },
        "train_images": train.len(),
        "val_images": val.len(),
        "train_seconds": train_seconds,
        "pretrain_call_seconds": run_seconds,
        "train_images_per_second": trained_images / train_seconds,
        "epoch_images_per_second": images_per_second,
        "epoch_knn_top1": epoch_knn,
        "epoch_train_seconds": epoch_seconds,
        "eval_encoder": args.eval_encoder,
        "knn_top1": knn,
        "probe_top1": probe,
        "random_knn_top1": random_knn,
        "random_probe_top1": random_probe,
        "raw_pixel_knn_top1": pixels,
        "peak_rss_mib_training": peak_rss_training,
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    match &args.out {
        Some(out) => write_summary(out, &summary),
        None => Ok(()),
    }
}

/// The final evaluations: kNN and linear probe of the trained and the random-init encoder,
/// and kNN on raw pixels (all `None` for a throughput run).
#[derive(Default)]
struct Scores {
    knn: Option<f64>,
    probe: Option<f64>,
    random_knn: Option<f64>,
    random_probe: Option<f64>,
    pixels: Option<f64>,
}

fn final_scores(
    trained: &selfsup::backbone::Backbone,
    config: &PretrainConfig,
    eval: &KnnEvaluation,
    device: &Device,
) -> selfsup::Result<Scores> {
    let evaluate = |encoder: &selfsup::backbone::Backbone| -> selfsup::Result<(f64, f64)> {
        let scores = frozen_evaluation(
            encoder,
            eval,
            config.knn,
            &LinearProbeConfig::default(),
            device,
        )?;
        Ok((scores.knn_top1, scores.probe.top1))
    };
    let (knn, probe) = evaluate(trained)?;
    let (random_knn, random_probe) = evaluate(&init_backbone(config, device)?.valid())?;
    let pixels = raw_pixel_knn(
        eval.bank.clone(),
        eval.queries.clone(),
        &eval.transform,
        device,
    )?;
    Ok(Scores {
        knn: Some(knn),
        probe: Some(probe),
        random_knn: Some(random_knn),
        random_probe: Some(random_probe),
        pixels: Some(pixels),
    })
}

/// Writes the JSON summary line to `out`, creating its folder.
fn write_summary(out: &std::path::Path, summary: &serde_json::Value) -> selfsup::Result<()> {
    let io = |source| selfsup::Error::Io {
        path: out.to_path_buf(),
        source,
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(out, format!("{summary}\n")).map_err(io)
}
