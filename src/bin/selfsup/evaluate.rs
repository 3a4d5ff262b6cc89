//! The commands that use a checkpoint: kNN, linear probe, fine-tuning, export, energy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;
use selfsup::backbone::Backbone;
use selfsup::data::{ImageDataset, check_same_classes, open_dataset, read_image};
use selfsup::energy::Energy;
use selfsup::eval::{
    FineTuneConfig, KnnClassifier, KnnConfig, LinearProbeConfig, extract_features, fine_tune,
    linear_probe,
};
use selfsup::model::BackboneBranch;
use selfsup::prelude::{Device, Module, Tensor};
use selfsup::train::{PretrainConfig, load_backbone, load_checkpoint};
use selfsup::{Error, Result};

/// The inputs of the evaluation commands.
#[derive(clap::Args)]
pub struct EvalData {
    /// A checkpoint written by `selfsup pretrain`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Labelled training images (the kNN bank, or what the probe / fine-tuning trains on).
    #[arg(long)]
    train: PathBuf,
    /// Labelled validation images (what is scored); same classes as --train.
    #[arg(long)]
    val: PathBuf,
    /// Which backbone to evaluate: the online one, or the momentum target (the one the I-JEPA
    /// and DINO papers evaluate; BYOL, MoCo, DINO and I-JEPA keep one). Default: the one the
    /// run's kNN monitor read (`pretrain --eval-encoder`, online unless set).
    #[arg(long, value_enum)]
    encoder: Option<EncoderBranch>,
}

/// `--encoder`: [`BackboneBranch`] as a command-line value.
#[derive(Clone, Copy, ValueEnum)]
pub enum EncoderBranch {
    /// The backbone the optimiser trained.
    Online,
    /// Its EMA copy.
    Target,
}

impl From<EncoderBranch> for BackboneBranch {
    fn from(branch: EncoderBranch) -> Self {
        match branch {
            EncoderBranch::Online => BackboneBranch::Online,
            EncoderBranch::Target => BackboneBranch::Target,
        }
    }
}

/// `selfsup knn`.
#[derive(clap::Args)]
pub struct KnnArgs {
    #[command(flatten)]
    data: EvalData,
    /// Neighbours.
    #[arg(long, default_value_t = 200)]
    k: usize,
    /// Temperature of the weights exp(similarity / T).
    #[arg(long, default_value_t = 0.1)]
    temperature: f64,
}

/// `selfsup probe`.
#[derive(clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    data: EvalData,
    /// Passes over the training features.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
}

/// `selfsup finetune`.
#[derive(clap::Args)]
pub struct FinetuneArgs {
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
    /// Layer-wise learning-rate decay for a ViT (e.g. 0.75): each block towards the input
    /// trains at this factor times the rate of the one above it.
    #[arg(long)]
    layer_decay: Option<f64>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Safetensors,
    Burn,
}

/// `selfsup export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// A checkpoint written by `selfsup pretrain`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// safetensors (torchvision names) or burn (burnpack).
    #[arg(long, value_enum, default_value = "safetensors")]
    format: ExportFormat,
    /// Which backbone to write: the online one, or the momentum target. Default: the one the
    /// run's kNN monitor read (`pretrain --eval-encoder`, online unless set).
    #[arg(long, value_enum)]
    encoder: Option<EncoderBranch>,
}

/// `selfsup energy`.
#[derive(clap::Args)]
pub struct EnergyArgs {
    /// A checkpoint written by `selfsup pretrain`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The first image.
    a: PathBuf,
    /// The second image.
    b: PathBuf,
}

/// What the evaluation commands need: a checkpoint's backbone in evaluation mode, its
/// configuration, and the labelled training and validation images, checked to share their
/// classes before any work.
struct Evaluation {
    encoder: Backbone,
    config: PretrainConfig,
    train: Arc<dyn ImageDataset>,
    val: Arc<dyn ImageDataset>,
}

impl Evaluation {
    fn open(data: &EvalData, device: &Device) -> Result<Self> {
        let train = open_dataset(&data.train, true)?;
        let val = open_dataset(&data.val, false)?;
        check_same_classes(&*train, "--train", &*val, "--val")?;
        let (encoder, meta) =
            load_backbone(&data.checkpoint, data.encoder.map(Into::into), device)?;
        Ok(Self {
            encoder,
            config: meta.config,
            train,
            val,
        })
    }
}

/// `selfsup knn`.
pub fn knn(args: &KnnArgs, device: &Device) -> Result<()> {
    let e = Evaluation::open(&args.data, device)?;
    let view = e.config.eval_view();
    let encoder = e.encoder.valid();
    let bank = extract_features(&encoder, e.train.clone(), &view, 256, device)?;
    let queries = extract_features(&encoder, e.val.clone(), &view, 256, device)?;
    let missing = |what: &str| Error::MissingInput {
        context: "knn".into(),
        what: format!("labels of the {what} images"),
    };
    let classes = e.val.classes().to_vec();
    let config = KnnConfig {
        k: args.k,
        temperature: args.temperature,
    };
    let classifier = KnnClassifier::new(
        bank.features,
        bank.labels.ok_or_else(|| missing("--train"))?,
        classes.len(),
        config,
    )?;
    let report = classifier.evaluate(
        queries.features,
        &queries.labels.ok_or_else(|| missing("--val"))?,
    )?;
    println!(
        "kNN (k = {}, T = {}) top-1: {:.2}% on {} images",
        args.k,
        args.temperature,
        100.0 * report.top1,
        report.num_samples
    );
    print!("{}", report.confusion_table(&classes));
    Ok(())
}

/// `selfsup probe`.
pub fn probe(args: &ProbeArgs, device: &Device) -> Result<()> {
    let e = Evaluation::open(&args.data, device)?;
    let config = LinearProbeConfig {
        epochs: args.epochs,
        lr: args.lr,
        ..LinearProbeConfig::default()
    };
    let classes = e.val.classes().to_vec();
    let view = e.config.eval_view();
    let report = linear_probe(&e.encoder.valid(), e.train, e.val, &view, &config, device)?;
    println!(
        "linear probe top-1: {:.2}% on {} images",
        100.0 * report.top1,
        report.num_samples
    );
    print!("{}", report.confusion_table(&classes));
    Ok(())
}

/// `selfsup finetune`.
pub fn finetune(args: &FinetuneArgs, device: &Device) -> Result<()> {
    let e = Evaluation::open(&args.data, device)?;
    let view = e.config.eval_view();
    let size = view.view_sizes()[0];
    let mut config = FineTuneConfig::new(size);
    config.epochs = args.epochs;
    config.lr = args.lr;
    config.batch_size = args.batch_size;
    config.layer_decay = args.layer_decay;
    let classes = e.val.classes().to_vec();
    let (_, report) = fine_tune(e.encoder, e.train, e.val, &view, &config, device)?;
    println!(
        "fine-tuned top-1: {:.2}% on {} images",
        100.0 * report.top1,
        report.num_samples
    );
    print!("{}", report.confusion_table(&classes));
    Ok(())
}

/// `selfsup export`.
pub fn export(args: &ExportArgs, device: &Device) -> Result<()> {
    let (encoder, _) = load_backbone(&args.checkpoint, args.encoder.map(Into::into), device)?;
    let encoder = encoder.valid();
    match args.format {
        ExportFormat::Safetensors => selfsup::export::export_safetensors(&encoder, &args.out)?,
        ExportFormat::Burn => selfsup::export::export_burn(&encoder, &args.out)?,
    }
    println!("backbone written to {}", args.out.display());
    Ok(())
}

/// `selfsup energy`.
pub fn energy(args: &EnergyArgs, device: &Device) -> Result<()> {
    let (model, meta) = load_checkpoint(&args.checkpoint, device)?;
    let model = model.valid();
    let view = meta.config.eval_view();
    let size = view.view_sizes()[0];
    let load = |path: &Path| -> Result<Tensor<4>> {
        let image = read_image(path)?;
        let mut out = vec![0.0f32; 3 * size * size];
        view.apply(&image, [0, 0, 0], &mut [&mut out])?;
        Ok(Tensor::from_data(
            burn::tensor::TensorData::new(out, [1, 3, size, size]),
            device,
        ))
    };
    let energy = model
        .embedding
        .energy(load(&args.a)?, load(&args.b)?, Energy::Cosine)?;
    let value = energy
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::tensor_read("energy", e))?[0];
    // Rounding can put identical embeddings a hair below zero.
    let value = value.max(0.0) + 0.0;
    println!("energy {value:.4} (cosine: 0 = identical embeddings, 1 = unrelated, 2 = opposite)");
    Ok(())
}
