//! `selfsup pretrain`: a configuration from a method's recipe (for the preset given, or the
//! one the images' sizes call for), a file, and flags; then training.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use clap::builder::{PossibleValue, PossibleValuesParser};
use selfsup::backbone::{BackboneConfig, ConvNetConfig, ResNetConfig, VitConfig};
use selfsup::data::{ImageDataset, open_dataset};
use selfsup::distributed::World;
use selfsup::method::{AnyMethodConfig, MethodConfig, Preset, RecipeContext};
use selfsup::prelude::Device;
use selfsup::report::{ReportData, write_report};
use selfsup::train::{KnnEvaluation, PretrainConfig, PretrainOptions, pretrain_with};
use selfsup::{Error, Result};

use crate::evaluate::EncoderBranch;

/// The default number of epochs without a configuration file.
const DEFAULT_EPOCHS: usize = 100;
/// Images whose shorter side is at least this get the ImageNet preset.
const IMAGENET_MIN_SIDE: u32 = 224;
/// Images sampled to choose the preset.
const PRESET_SAMPLE: usize = 16;

/// The built-in backbones.
#[derive(Clone, Copy, ValueEnum)]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
    Convnet,
    /// ViT-Tiny (192 wide): 4-pixel patches on 32-pixel images at the cifar preset, 16-pixel
    /// patches on 224-pixel images at imagenet.
    VitTiny,
    /// ViT-Small (384 wide), patches as vit-tiny.
    VitSmall,
    /// ViT-Base (768 wide), patches as vit-tiny.
    VitBase,
}

/// The presets, as the command line names them.
#[derive(Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// 32 x 32 images: the CIFAR stem and the CIFAR recipes.
    Cifar,
    /// Photographs: the ImageNet stem, 224-pixel views and the papers' ImageNet recipes.
    Imagenet,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Cifar => Preset::Cifar,
            PresetArg::Imagenet => Preset::Imagenet,
        }
    }
}

fn method_names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        AnyMethodConfig::NAMES
            .iter()
            .map(|n| PossibleValue::new(*n)),
    )
}

/// The arguments of `selfsup pretrain`.
#[derive(clap::Args)]
pub struct PretrainArgs {
    /// Training images (required unless --print-config).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Labelled validation images: enables the kNN monitor (the bank is --data, which must
    /// then be labelled with the same classes).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// A TOML configuration (see --print-config); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The method (default byol). With --config, the method's own defaults replace the
    /// file's method, views, optimiser and schedules.
    #[arg(long, value_parser = method_names())]
    pub method: Option<String>,
    /// The recipe's scale; default: the config file's, else chosen from the images' sizes
    /// (shorter side of 224 pixels or more: imagenet).
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Local crops of multi-crop methods (swav, dino, deepcluster, lejepa): 96-pixel crops at the
    /// imagenet preset, 16-pixel at cifar.
    #[arg(long)]
    pub crops: Option<usize>,
    /// The backbone (default resnet18 with the preset's stem; vit-tiny for mae and ijepa).
    #[arg(long, value_enum)]
    pub backbone: Option<Arch>,
    /// First-stage channels of the backbone (ResNet: 64 is full width).
    #[arg(long)]
    pub width: Option<usize>,
    /// Scale of the paper's projector / predictor sizes (1.0 = paper).
    #[arg(long)]
    pub head_width: Option<f64>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate (per 256 images when the recipe scales it).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, shuffling and views.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Loader worker threads (0: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The backbone the kNN monitor evaluates: online, or the momentum target (byol, moco,
    /// dino, ijepa; the one the I-JEPA and DINO papers evaluate).
    #[arg(long, value_enum)]
    pub eval_encoder: Option<EncoderBranch>,
    /// Output folder for checkpoint.ckpt and metrics.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Resume from this checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Hide the progress bar (a line per epoch is still printed).
    #[arg(long)]
    pub no_progress: bool,
    /// Under `mpirun` / `srun`: normalise the heads' batch norm with the statistics of the
    /// global batch (synchronised batch norm) rather than each rank's.
    #[arg(long)]
    pub sync_batch_norm: bool,
    /// Print the resulting configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The backbone `arch` at `width` with the stem (ResNets) or patch size (ViTs) of `preset`.
fn backbone(arch: Arch, width: Option<usize>, preset: Preset) -> Result<BackboneConfig> {
    let (image, patch) = match preset {
        Preset::Cifar => (32, 4),
        Preset::Imagenet => (224, 16),
    };
    let vit = match arch {
        Arch::Convnet => {
            let net = ConvNetConfig::new().with_width(width.unwrap_or(32));
            return Ok(BackboneConfig::ConvNet(net));
        }
        Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => {
            let base = match arch {
                Arch::Resnet34 => ResNetConfig::resnet34(),
                Arch::Resnet50 => ResNetConfig::resnet50(),
                _ => ResNetConfig::resnet18(),
            };
            let resnet = base
                .with_stem(preset.stem())
                .with_width(width.unwrap_or(64));
            return Ok(BackboneConfig::ResNet(resnet));
        }
        Arch::VitTiny => VitConfig::tiny(image, patch),
        Arch::VitSmall => VitConfig::small(image, patch),
        Arch::VitBase => VitConfig::base(image, patch),
    };
    match width {
        Some(w) => Err(vit_width_error(w)),
        None => Ok(BackboneConfig::Vit(vit)),
    }
}

/// `--width` given with a vision transformer.
fn vit_width_error(width: usize) -> Error {
    Error::invalid_config(
        "--width",
        width,
        "no --width with a ViT: choose vit-tiny, vit-small or vit-base (or set \
         backbone.Vit.hidden_dim in a configuration file)",
    )
}

fn read_config(path: &Path) -> Result<PretrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
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

/// The preset the images call for: imagenet when the shorter side of every sampled image is
/// at least 224 pixels, cifar otherwise; with the reason, for the terminal.
fn detect_preset(data: &dyn ImageDataset) -> Result<(Preset, String)> {
    let sampled = data.len().min(PRESET_SAMPLE);
    let mut smallest: Option<(u32, u32)> = None;
    for i in 0..sampled {
        let image = data.image(i * data.len() / sampled)?;
        let size = (image.width(), image.height());
        if smallest.is_none_or(|s| size.0.min(size.1) < s.0.min(s.1)) {
            smallest = Some(size);
        }
    }
    let Some((w, h)) = smallest else {
        return Ok((Preset::Cifar, "no images to sample".into()));
    };
    let preset = if w.min(h) >= IMAGENET_MIN_SIDE {
        Preset::Imagenet
    } else {
        Preset::Cifar
    };
    Ok((
        preset,
        format!("the smallest of {sampled} sampled images is {w}x{h}"),
    ))
}

/// The views of the configuration's method with `crops` local crops; an error for a method
/// without local crops.
fn views_with_crops(c: &mut PretrainConfig, crops: usize) -> Result<()> {
    let views = c
        .method
        .recipe(&RecipeContext {
            preset: c.preset,
            local_crops: Some(crops),
        })
        .views;
    if views.num_views() - views.num_global() != crops {
        return Err(Error::invalid_config(
            "--crops",
            crops,
            format!(
                "no local crops: {} has none (multi-crop methods: swav, dino, deepcluster, lejepa)",
                c.method.cli_name()
            ),
        ));
    }
    c.views = views;
    Ok(())
}

/// The configuration of the run: file or recipe, preset, method, backbone, then flags.
fn build_config(args: &PretrainArgs, data: Option<&dyn ImageDataset>) -> Result<PretrainConfig> {
    let file = args.config.as_deref().map(read_config).transpose()?;
    let preset = match (args.preset, &file, data) {
        (Some(p), _, _) => p.into(),
        (None, Some(c), _) => c.preset,
        (None, None, Some(data)) => {
            let (preset, why) = detect_preset(data)?;
            selfsup::distributed::eprint_line(&format!(
                "preset: {} ({why}; --preset chooses another)",
                preset.name()
            ));
            preset
        }
        (None, None, None) => Preset::Cifar,
    };
    // Masked-image methods need patch tokens: their default backbone is ViT-Tiny.
    let masked = matches!(args.method.as_deref(), Some("mae" | "ijepa"));
    let default_arch = if masked {
        Arch::VitTiny
    } else {
        Arch::Resnet18
    };
    let arch = args.backbone.unwrap_or(default_arch);
    let mut c = match file {
        None => PretrainConfig::builtin(
            args.method.as_deref().unwrap_or("byol"),
            backbone(arch, args.width, preset)?,
            preset,
            DEFAULT_EPOCHS,
        )?,
        Some(mut c) => {
            let method = args.method.as_deref().unwrap_or(c.method.cli_name());
            if args.method.is_some() || preset != c.preset {
                c.preset = preset;
                c = c.with_method(AnyMethodConfig::preset(method, preset)?, None);
            }
            c
        }
    };
    if let Some(crops) = args.crops {
        views_with_crops(&mut c, crops)?;
    }
    if args.backbone.is_some() {
        c.backbone = backbone(arch, args.width, c.preset)?;
    } else if let Some(w) = args.width {
        c.backbone = match c.backbone {
            BackboneConfig::ResNet(r) => BackboneConfig::ResNet(r.with_width(w)),
            BackboneConfig::ConvNet(n) => BackboneConfig::ConvNet(n.with_width(w)),
            BackboneConfig::Vit(_) => return Err(vit_width_error(w)),
        };
    }
    apply_flags(args, &mut c);
    Ok(c)
}

/// The flags that override single fields.
fn apply_flags(args: &PretrainArgs, c: &mut PretrainConfig) {
    if let Some(e) = args.epochs {
        c.epochs = e;
    }
    if let Some(h) = args.head_width {
        c.head_width = h;
    }
    if let Some(b) = args.batch_size {
        c.loader.batch_size = b;
    }
    if let Some(lr) = args.lr {
        c.lr.base_lr = lr;
    }
    if let Some(s) = args.seed {
        c.loader.seed = s;
    }
    if let Some(w) = args.workers {
        c.loader.workers = w;
    }
    if let Some(branch) = args.eval_encoder {
        c.eval_encoder = branch.into();
    }
    if args.out.is_some() {
        c.output_dir = args.out.clone();
    }
    if args.sync_batch_norm {
        c.distributed.sync_batch_norm = true;
    }
    if args.no_progress {
        c.progress = false;
    }
}

/// `--print-config`: the configuration as TOML on stdout (the images are read only to choose
/// the preset when neither --preset nor --config gives it).
pub fn print_config(args: &PretrainArgs) -> Result<()> {
    let data = match (&args.data, args.preset, &args.config) {
        (Some(path), None, None) => Some(open_dataset(path, false)?),
        _ => None,
    };
    let c = build_config(args, data.as_deref())?;
    let text = toml::to_string_pretty(&c)
        .map_err(|e| Error::invalid_config("config", e, "a serialisable configuration"))?;
    println!(
        "# selfsup pretrain configuration: {} with its {} recipe.\n\
         # Train with `selfsup pretrain --data IMAGES --config THIS_FILE`; flags override it.\n\n{text}",
        c.method.name(),
        c.preset.name()
    );
    Ok(())
}

/// `selfsup pretrain`.
pub fn run(args: &PretrainArgs, device: &Device, world: World) -> Result<()> {
    let data = args.data.as_ref().ok_or_else(|| Error::MissingInput {
        context: "selfsup pretrain".into(),
        what: "--data (the training images)".into(),
    })?;
    let train = open_dataset(data, true)?;
    let c = build_config(args, Some(&*train))?;
    c.check()?;
    let val = args
        .val
        .as_ref()
        .map(|v| open_dataset(v, true))
        .transpose()?;
    let knn = val.as_ref().map(|queries| KnnEvaluation {
        bank: train.clone(),
        queries: queries.clone(),
        transform: c.eval_view(),
        batch_size: 256,
    });
    let report_data = ReportData {
        bank: train.clone(),
        queries: val.unwrap_or_else(|| train.clone()),
    };
    let options = PretrainOptions {
        knn,
        resume: args.resume.clone(),
        world,
        ..Default::default()
    };
    let trained = pretrain_with(&c, train, device, options)?;
    if !world.is_root() {
        // Rank 0 reports and writes the files.
        return Ok(());
    }
    if world.is_distributed() {
        println!(
            "trained on {} ranks, {} images per rank per step",
            world.size(),
            c.loader.batch_size / world.size()
        );
    }
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
    if let Some(out) = &c.output_dir {
        let files = write_report(std::slice::from_ref(out), Some(&report_data), out, device)?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        println!("report: {}", names.join(", "));
    }
    Ok(())
}
