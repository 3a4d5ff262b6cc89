//! The `selfsup` command line: pretrain, evaluate (kNN, linear probe, fine-tune), export, and
//! score image pairs with a trained encoder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use selfsup::augment::ViewTransform;
use selfsup::backbone::{Backbone, BackboneConfig, ConvNetConfig, ResNetConfig, Stem};
use selfsup::data::{ImageDataset, open_dataset, read_image};
use selfsup::device::{DeviceChoice, select_device};
use selfsup::energy::Energy;
use selfsup::eval::{
    FineTuneConfig, KnnClassifier, KnnConfig, LinearProbeConfig, extract_features, fine_tune,
    linear_probe,
};
use selfsup::objective::ObjectiveConfig;
use selfsup::prelude::*;
use selfsup::train::{
    KnnEvaluation, PretrainConfig, PretrainOptions, load_checkpoint, pretrain_with,
};
use selfsup::{Error, Result};

#[derive(Parser)]
#[command(
    name = "selfsup",
    version,
    about = "Self-supervised pretraining of image encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Device: auto (a GPU backend when compiled in), cpu, wgpu or cuda.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Method {
    Byol,
    Simsiam,
    BarlowTwins,
    Swav,
    Vicreg,
    Simclr,
}

#[derive(Clone, Copy, ValueEnum)]
enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
    Convnet,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Safetensors,
    Burn,
}

/// The inputs of the evaluation commands.
#[derive(clap::Args)]
struct EvalData {
    /// A checkpoint written by `selfsup pretrain`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Labelled training images (the kNN bank, or what the probe / fine-tuning trains on).
    #[arg(long)]
    train: PathBuf,
    /// Labelled validation images (what is scored).
    #[arg(long)]
    val: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain an encoder on unlabelled images (a folder, CIFAR binaries, or a .pack file).
    Pretrain {
        /// Training images.
        #[arg(long)]
        data: PathBuf,
        /// Labelled validation images: enables the kNN monitor (the bank is --data, which
        /// must then be labelled).
        #[arg(long)]
        val: Option<PathBuf>,
        /// A TOML configuration (see --print-config); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The method (default byol).
        #[arg(long, value_enum)]
        method: Option<Method>,
        /// The backbone (default resnet18 with the CIFAR stem).
        #[arg(long, value_enum)]
        backbone: Option<Arch>,
        /// First-stage channels of the backbone (ResNet: 64 is full width).
        #[arg(long)]
        width: Option<usize>,
        /// Scale of the paper's projector / predictor sizes (1.0 = paper).
        #[arg(long)]
        head_width: Option<f64>,
        /// Epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Images per batch.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Base learning rate (per 256 images when the recipe scales it).
        #[arg(long)]
        lr: Option<f64>,
        /// Seed of initialisation, shuffling and views.
        #[arg(long)]
        seed: Option<u64>,
        /// Loader worker threads (0: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Output folder for checkpoint.ckpt and metrics.jsonl.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Resume from this checkpoint.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Print the resulting configuration as TOML and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// kNN top-1 of a checkpoint's encoder (bank: --train, queries: --val).
    Knn {
        #[command(flatten)]
        data: EvalData,
        /// Neighbours.
        #[arg(long, default_value_t = 200)]
        k: usize,
        /// Temperature of the weights exp(similarity / T).
        #[arg(long, default_value_t = 0.1)]
        temperature: f64,
    },
    /// Linear probe on frozen features: top-1 and confusion matrix on --val.
    Probe {
        #[command(flatten)]
        data: EvalData,
        /// Passes over the training features.
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Adam learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
    },
    /// Fine-tune the whole encoder with a linear head: top-1 and confusion matrix on --val.
    Finetune {
        #[command(flatten)]
        data: EvalData,
        /// Passes over the training images.
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        /// Peak SGD learning rate (cosine to 0).
        #[arg(long, default_value_t = 0.05)]
        lr: f64,
        /// Images per step.
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
    },
    /// Export the backbone (safetensors with torchvision names, or burn's format).
    Export {
        /// A checkpoint written by `selfsup pretrain`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// safetensors (torchvision names) or burn (burnpack).
        #[arg(long, value_enum, default_value = "safetensors")]
        format: ExportFormat,
    },
    /// How compatible two images are under a trained encoder: the cosine energy
    /// 1 - cos(z_a, z_b) of their embeddings (low: views of the same thing).
    Energy {
        /// A checkpoint written by `selfsup pretrain`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The first image.
        a: PathBuf,
        /// The second image.
        b: PathBuf,
    },
}

fn objective(method: Method) -> ObjectiveConfig {
    match method {
        Method::Byol => ObjectiveConfig::Byol,
        Method::Simsiam => ObjectiveConfig::SimSiam,
        Method::BarlowTwins => ObjectiveConfig::barlow_twins(),
        Method::Swav => ObjectiveConfig::swav(),
        Method::Vicreg => ObjectiveConfig::vicreg(),
        Method::Simclr => ObjectiveConfig::ntxent(),
    }
}

fn backbone(arch: Arch, width: Option<usize>) -> BackboneConfig {
    match arch {
        Arch::Convnet => {
            BackboneConfig::ConvNet(ConvNetConfig::new().with_width(width.unwrap_or(32)))
        }
        resnet => {
            let base = match resnet {
                Arch::Resnet34 => ResNetConfig::resnet34(),
                Arch::Resnet50 => ResNetConfig::resnet50(),
                _ => ResNetConfig::resnet18(),
            };
            BackboneConfig::ResNet(base.with_stem(Stem::Cifar).with_width(width.unwrap_or(64)))
        }
    }
}

fn read_config(path: &PathBuf) -> Result<PretrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        Error::invalid_config(
            format!("config file {}", path.display()),
            e.to_string().trim(),
            "a TOML pretraining configuration (see `selfsup pretrain --print-config`)",
        )
    })
}

/// What the evaluation commands need: a checkpoint's backbone in evaluation mode, its
/// configuration, the validation images and their class names.
struct Evaluation {
    encoder: Backbone,
    config: PretrainConfig,
    val: Arc<dyn ImageDataset>,
    classes: Vec<String>,
}

fn encoder_and_val(checkpoint: &PathBuf, val: &PathBuf, device: &Device) -> Result<Evaluation> {
    let (model, meta) = load_checkpoint(checkpoint, device)?;
    let val = open_dataset(val, false)?;
    let classes = val.classes().to_vec();
    Ok(Evaluation {
        encoder: model.embedding.online.backbone.valid(),
        config: meta.config,
        val,
        classes,
    })
}

/// The evaluation view at the training resolution.
fn eval_view(config: &PretrainConfig) -> ViewTransform {
    let size = config.views.view_sizes().first().copied().unwrap_or(32);
    ViewTransform::eval(Some(size), size)
}

fn run(cli: Cli) -> Result<()> {
    let device = select_device(cli.device.parse::<DeviceChoice>()?)?;
    match cli.command {
        Command::Pretrain {
            data,
            val,
            config,
            method,
            backbone: arch,
            width,
            head_width,
            epochs,
            batch_size,
            lr,
            seed,
            workers,
            out,
            resume,
            no_progress,
            print_config,
        } => {
            let mut c = match &config {
                Some(path) => read_config(path)?,
                None => PretrainConfig::cifar(
                    objective(method.unwrap_or(Method::Byol)),
                    backbone(arch.unwrap_or(Arch::Resnet18), width),
                    epochs.unwrap_or(100),
                ),
            };
            if config.is_some() {
                if let Some(m) = method {
                    let defaults =
                        PretrainConfig::cifar(objective(m), c.backbone.clone(), c.epochs);
                    c.objective = defaults.objective;
                    c.views = defaults.views;
                }
                if let Some(a) = arch {
                    c.backbone = backbone(a, width);
                } else if let Some(w) = width {
                    c.backbone = match c.backbone {
                        BackboneConfig::ResNet(r) => BackboneConfig::ResNet(r.with_width(w)),
                        BackboneConfig::ConvNet(n) => BackboneConfig::ConvNet(n.with_width(w)),
                    };
                }
            }
            if let Some(e) = epochs {
                c.epochs = e;
            }
            if let Some(h) = head_width {
                c.head_width = h;
            }
            if let Some(b) = batch_size {
                c.loader.batch_size = b;
            }
            if let Some(lr) = lr {
                c.lr.base_lr = lr;
            }
            if let Some(s) = seed {
                c.loader.seed = s;
            }
            if let Some(w) = workers {
                c.loader.workers = w;
            }
            if out.is_some() {
                c.output_dir = out;
            }
            if no_progress {
                c.progress = false;
            }
            if print_config {
                let text = toml::to_string_pretty(&c).map_err(|e| {
                    Error::invalid_config("config", e, "a serialisable configuration")
                })?;
                println!("{text}");
                return Ok(());
            }
            c.check()?;
            let train = open_dataset(&data, true)?;
            let knn = match val {
                Some(v) => Some(KnnEvaluation {
                    bank: train.clone(),
                    queries: open_dataset(&v, true)?,
                    transform: eval_view(&c),
                    batch_size: 256,
                }),
                None => None,
            };
            let options = PretrainOptions {
                knn,
                resume,
                ..Default::default()
            };
            let trained = pretrain_with(&c, train, &device, options)?;
            if let Some(last) = trained.history.last() {
                println!(
                    "done: {} steps, final loss {:.4}{}",
                    trained.steps,
                    last.loss,
                    last.knn_top1
                        .map(|a| format!(", kNN top-1 {:.2}%", 100.0 * a))
                        .unwrap_or_default()
                );
            }
            if let Some(path) = trained.checkpoint {
                println!("checkpoint: {}", path.display());
            }
        }
        Command::Knn {
            data:
                EvalData {
                    checkpoint,
                    train,
                    val,
                },
            k,
            temperature,
        } => {
            let Evaluation {
                encoder,
                config,
                val: queries_set,
                classes,
            } = encoder_and_val(&checkpoint, &val, &device)?;
            let view = eval_view(&config);
            let bank =
                extract_features(&encoder, open_dataset(&train, false)?, &view, 256, &device)?;
            let queries = extract_features(&encoder, queries_set, &view, 256, &device)?;
            let missing = |what: &str| Error::MissingInput {
                context: "knn".into(),
                what: format!("labels of the {what} images"),
            };
            let knn = KnnClassifier::new(
                bank.features,
                bank.labels.ok_or_else(|| missing("--train"))?,
                classes.len(),
                KnnConfig { k, temperature },
            )?;
            let report = knn.evaluate(
                queries.features,
                &queries.labels.ok_or_else(|| missing("--val"))?,
            )?;
            println!(
                "kNN (k = {k}, T = {temperature}) top-1: {:.2}% on {} images",
                100.0 * report.top1,
                report.num_samples
            );
            print!("{}", report.confusion_table(&classes));
        }
        Command::Probe {
            data:
                EvalData {
                    checkpoint,
                    train,
                    val,
                },
            epochs,
            lr,
        } => {
            let Evaluation {
                encoder,
                config: meta_config,
                val,
                classes,
            } = encoder_and_val(&checkpoint, &val, &device)?;
            let config = LinearProbeConfig {
                epochs,
                lr,
                ..LinearProbeConfig::default()
            };
            let report = linear_probe(
                &encoder,
                open_dataset(&train, false)?,
                val,
                &eval_view(&meta_config),
                &config,
                &device,
            )?;
            println!(
                "linear probe top-1: {:.2}% on {} images",
                100.0 * report.top1,
                report.num_samples
            );
            print!("{}", report.confusion_table(&classes));
        }
        Command::Finetune {
            data:
                EvalData {
                    checkpoint,
                    train,
                    val,
                },
            epochs,
            lr,
            batch_size,
        } => {
            let (model, meta) = load_checkpoint(&checkpoint, &device)?;
            let size = meta
                .config
                .views
                .view_sizes()
                .first()
                .copied()
                .unwrap_or(32);
            let val = open_dataset(&val, false)?;
            let classes = val.classes().to_vec();
            let mut config = FineTuneConfig::new(size);
            config.epochs = epochs;
            config.lr = lr;
            config.batch_size = batch_size;
            let train: Arc<dyn ImageDataset> = open_dataset(&train, true)?;
            let (_, report) = fine_tune(
                model.embedding.online.backbone,
                train,
                val,
                &eval_view(&meta.config),
                &config,
                &device,
            )?;
            println!(
                "fine-tuned top-1: {:.2}% on {} images",
                100.0 * report.top1,
                report.num_samples
            );
            print!("{}", report.confusion_table(&classes));
        }
        Command::Export {
            checkpoint,
            out,
            format,
        } => {
            let (model, _) = load_checkpoint(&checkpoint, &device)?;
            let encoder = model.embedding.online.backbone.valid();
            match format {
                ExportFormat::Safetensors => selfsup::export::export_safetensors(&encoder, &out)?,
                ExportFormat::Burn => selfsup::export::export_burn(&encoder, &out)?,
            }
            println!("backbone written to {}", out.display());
        }
        Command::Energy { checkpoint, a, b } => {
            let (model, meta) = load_checkpoint(&checkpoint, &device)?;
            let model = model.valid();
            let view = eval_view(&meta.config);
            let size = view.view_sizes()[0];
            let load = |path: &PathBuf| -> Result<Tensor<4>> {
                let image = read_image(path)?;
                let mut out = vec![0.0f32; 3 * size * size];
                view.apply(&image, [0, 0, 0], &mut [&mut out])?;
                Ok(Tensor::from_data(
                    burn::tensor::TensorData::new(out, [1, 3, size, size]),
                    &device,
                ))
            };
            let energy = model
                .embedding
                .energy(load(&a)?, load(&b)?, Energy::Cosine)?;
            let value = energy
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| Error::MissingInput {
                    context: "energy".into(),
                    what: format!("a readable result ({e:?})"),
                })?[0];
            // Rounding can put identical embeddings a hair below zero.
            let value = value.max(0.0) + 0.0;
            println!(
                "energy {value:.4} (cosine: 0 = identical embeddings, 1 = unrelated, 2 = opposite)"
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
