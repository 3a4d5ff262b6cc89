//! Pictures of a run: the training curves (one run, or several overlaid), a retrieval sheet
//! (query images and their nearest training images by energy) and a 2-D PCA scatter of the
//! embeddings coloured by class, as PNG files. `selfsup report RUN_DIR` writes them, and
//! `selfsup pretrain --out` at the end of training.
//!
//! Text is drawn with DejaVu Sans, which the crate ships (`assets/fonts`), so reports work on a
//! machine without fonts.

mod charts;
mod pca;
mod reconstruction;
mod retrieval;
mod series;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use burn::module::Module;
use burn::tensor::Device;
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, IntoDrawingArea};

pub use charts::{Thresholds, training_curves};
pub use pca::{principal_components_2d, scatter};
pub use reconstruction::reconstruction_sheet;
pub use retrieval::{Retrieval, nearest, pick_queries, sheet};
pub use series::RunSeries;

use crate::augment::Normalize;
use crate::backbone::Backbone;
use crate::data::{ImageDataset, LoaderConfig, ViewLoader};
use crate::error::{Error, Result};
use crate::eval::extract_features;
use crate::method::MethodConfig;
use crate::method::{AnyMethod, Mae};
use crate::step::SelfSupervised;
use crate::train::PretrainConfig;
use crate::train::{CHECKPOINT_FILE, Checkpoint, load_checkpoint};

/// The font family the report draws text with.
pub const FONT: &str = "selfsup-sans";
/// The training curves' file.
pub const TRAINING_PNG: &str = "training.png";
/// The retrieval sheet's file.
pub const RETRIEVAL_PNG: &str = "retrieval.png";
/// The PCA scatter's file.
pub const PCA_PNG: &str = "pca.png";
/// MAE's reconstruction sheet's file.
pub const RECONSTRUCTION_PNG: &str = "reconstruction.png";
/// Query images on the retrieval sheet.
pub const RETRIEVAL_QUERIES: usize = 8;
/// Neighbours per query on the retrieval sheet.
pub const RETRIEVAL_NEIGHBOURS: usize = 8;
/// The seed that picks the retrieval sheet's queries.
pub const RETRIEVAL_SEED: u64 = 2021;

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the shipped font with plotters, once.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, plotters::style::FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "the shipped DejaVu Sans font could not be read".to_string())
        })
        .clone()
        .map_err(Error::Plot)
}

/// A plotting error as the crate's error.
pub(crate) fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// An RGB picture being drawn, encoded as PNG at the end.
pub struct PngCanvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl PngCanvas {
    /// A white `width x height` canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Self::from_image(RgbImage::from_pixel(
            width,
            height,
            image::Rgb([255, 255, 255]),
        ))
    }

    /// A canvas holding `image`.
    pub fn from_image(image: RgbImage) -> Self {
        let (width, height) = image.dimensions();
        Self {
            width,
            height,
            pixels: image.into_raw(),
        }
    }

    /// The area to draw on with plotters.
    pub fn area(&mut self) -> DrawingArea<BitMapBackend<'_>, Shift> {
        BitMapBackend::with_buffer(&mut self.pixels, (self.width, self.height)).into_drawing_area()
    }

    /// The picture.
    pub fn into_image(self) -> RgbImage {
        RgbImage::from_raw(self.width, self.height, self.pixels)
            .unwrap_or_else(|| RgbImage::new(self.width, self.height))
    }

    /// Encodes the picture as PNG at `path`.
    pub fn save(self, path: &Path) -> Result<()> {
        self.into_image().save(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })
    }
}

/// Labelled images for the retrieval sheet and the PCA scatter.
#[derive(Clone)]
pub struct ReportData {
    /// Images searched for neighbours (the training images).
    pub bank: Arc<dyn ImageDataset>,
    /// Images the queries are drawn from and the scatter shows (the validation images; the
    /// same `Arc` as `bank` to search the training images for each other, a query's own image
    /// left out).
    pub queries: Arc<dyn ImageDataset>,
}

/// The collapse thresholds of the run in `run_dir`, from its checkpoint's configuration.
fn thresholds(run_dir: &Path) -> Thresholds {
    let path = run_dir.join(CHECKPOINT_FILE);
    let Ok(ckpt) = Checkpoint::<serde_json::Value>::read_as(&path) else {
        return Thresholds::default();
    };
    let monitor = &ckpt.meta.config.monitor;
    let dim = ckpt.meta.embedding_dim.max(1) as f64;
    Thresholds {
        embedding_std: Some(monitor.min_relative_std / dim.sqrt()),
        effective_rank: Some(monitor.min_effective_rank),
        energy_gap: Some(monitor.min_energy_gap),
    }
}

/// Writes the report of the runs in `run_dirs` into `out`: the training curves of every run
/// (overlaid), and, given `data` and a checkpoint in the first run, its retrieval sheet and
/// PCA scatter. Returns the files written.
pub fn write_report(
    run_dirs: &[PathBuf],
    data: Option<&ReportData>,
    out: &Path,
    device: &Device,
) -> Result<Vec<PathBuf>> {
    register_font()?;
    let first = run_dirs.first().ok_or_else(|| Error::MissingInput {
        context: "report".into(),
        what: "a run folder".into(),
    })?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let series = run_dirs
        .iter()
        .map(|d| RunSeries::load(d))
        .collect::<Result<Vec<_>>>()?;
    let mut written = Vec::new();
    let training = out.join(TRAINING_PNG);
    training_curves(&series, &thresholds(first), 1200, 1050)?.save(&training)?;
    written.push(training);
    let checkpoint = first.join(CHECKPOINT_FILE);
    if let (Some(data), true) = (data, checkpoint.is_file()) {
        written.extend(embedding_pictures(&checkpoint, data, out, device)?);
    }
    Ok(written)
}

/// The retrieval sheet and the PCA scatter of a checkpoint's encoder.
fn embedding_pictures(
    checkpoint: &Path,
    data: &ReportData,
    out: &Path,
    device: &Device,
) -> Result<Vec<PathBuf>> {
    let (model, meta) = load_checkpoint(checkpoint, device)?;
    // The backbone the run's kNN monitor read (online unless the run asked for the target).
    let encoder = model
        .embedding
        .backbone_of(meta.config.eval_encoder)
        .unwrap_or(&model.embedding.online.backbone)
        .valid();
    let view = meta.config.eval_view();
    let features = |set: &Arc<dyn ImageDataset>| {
        let f = extract_features(&encoder, set.clone(), &view, 256, device)?;
        let [_, dim] = f.features.dims();
        let values = f
            .features
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::tensor_read("report features", e))?;
        Ok::<_, Error>((values, dim, f.labels))
    };
    let (bank, dim, _) = features(&data.bank)?;
    let (queries, _, labels) = features(&data.queries)?;
    let ids = pick_queries(data.queries.len(), RETRIEVAL_QUERIES, RETRIEVAL_SEED);
    let picked: Vec<f32> = ids
        .iter()
        .flat_map(|&i| queries[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    let same_set = Arc::ptr_eq(&data.bank, &data.queries);
    let rows = nearest(&bank, &picked, &ids, dim, RETRIEVAL_NEIGHBOURS, same_set);
    let retrieval = out.join(RETRIEVAL_PNG);
    sheet(&rows, &*data.queries, &*data.bank)?.save(&retrieval)?;
    let mut written = vec![retrieval];
    let n = data.queries.len();
    let points = principal_components_2d(&queries, n, dim)?;
    let labels = labels.unwrap_or_else(|| vec![0; n]);
    let title = format!("{} features of {n} images, PCA", meta.config.method.name());
    let pca = out.join(PCA_PNG);
    scatter(&points, &labels, data.queries.classes(), &title, 800)?.save(&pca)?;
    written.push(pca);
    if let AnyMethod::Mae(mae) = &model.method {
        let sheet = mae_reconstructions(&model, mae, &meta.config, data, device)?;
        let path = out.join(RECONSTRUCTION_PNG);
        PngCanvas::from_image(sheet).save(&path)?;
        written.push(path);
    }
    Ok(written)
}

/// MAE's reconstructions of the retrieval sheet's query images at the evaluation view, under
/// masks drawn as in training (seeded by [`RETRIEVAL_SEED`]).
fn mae_reconstructions(
    model: &SelfSupervised<Backbone>,
    mae: &Mae,
    config: &PretrainConfig,
    data: &ReportData,
    device: &Device,
) -> Result<RgbImage> {
    let masking = config
        .views
        .masking
        .as_ref()
        .ok_or_else(|| Error::MissingInput {
            context: "MAE reconstructions".into(),
            what: "the run's masks (views.masking)".into(),
        })?;
    let view = config.eval_view();
    let ids = pick_queries(data.queries.len(), RETRIEVAL_QUERIES, RETRIEVAL_SEED);
    let loader = ViewLoader::new(
        data.queries.clone(),
        view.clone(),
        LoaderConfig::in_order(ids.len().max(1)),
        device,
    )?;
    let batch = loader.build_batch(0, &ids)?;
    let size = batch.view_sizes[0];
    let masks = masking.draw(size, ids.len(), [RETRIEVAL_SEED, 0, 0]);
    let batch = batch.to_device(device);
    let masks = masks.to_device(ids.len(), device);
    let encoder = model.embedding.online.backbone.valid();
    let mae = mae.valid();
    let normalize = view
        .recipes()
        .next()
        .map(|r| r.normalize)
        .unwrap_or(Normalize::IMAGENET);
    reconstruction_sheet(&encoder, &mae, batch.views[0].clone(), &masks, &normalize)
}
