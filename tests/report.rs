//! The report's pictures: they exist, decode, have the expected size, are not blank, and an
//! overlay of two runs draws both.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use selfsup::augment::ViewTransform;
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::data::{ImageDataset, ImageFolder, LoaderConfig};
use selfsup::method::{AnyMethodConfig, Preset};
use selfsup::prelude::Device;
use selfsup::report::{
    PCA_PNG, RETRIEVAL_PNG, ReportData, RunSeries, TRAINING_PNG, principal_components_2d,
    write_report,
};
use selfsup::train::{KnnEvaluation, PretrainConfig, PretrainOptions, pretrain_with};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

fn sample() -> Arc<dyn ImageDataset> {
    Arc::new(ImageFolder::open(SAMPLE).unwrap().with_cache(true))
}

/// A two-epoch SimSiam run with the kNN monitor into `dir`.
fn train(dir: &Path, seed: u64) {
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(8).with_stages(2));
    let mut c = PretrainConfig::cifar(AnyMethodConfig::simsiam(Preset::Cifar), backbone, 2);
    c.head_width = 1.0 / 64.0;
    c.loader = LoaderConfig {
        batch_size: 8,
        seed,
        workers: 2,
        ..LoaderConfig::default()
    };
    c.monitor.every_steps = 1;
    c.progress = false;
    c.output_dir = Some(dir.to_path_buf());
    let options = PretrainOptions {
        knn: Some(KnnEvaluation {
            bank: sample(),
            queries: sample(),
            transform: ViewTransform::eval(None, 32),
            batch_size: 10,
        }),
        ..Default::default()
    };
    pretrain_with(&c, sample(), &Device::flex(), options).unwrap();
}

/// The variance of all channel values: a blank picture has (nearly) none.
fn variance(image: &RgbImage) -> f64 {
    let values: Vec<f64> = image.as_raw().iter().map(|&v| f64::from(v)).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64
}

/// Pixels within 40 (sum of channel differences) of `colour`.
fn pixels_near(image: &RgbImage, colour: [u8; 3]) -> usize {
    image
        .pixels()
        .filter(|p| {
            p.0.iter()
                .zip(colour)
                .map(|(a, b)| (i32::from(*a) - i32::from(b)).abs())
                .sum::<i32>()
                < 40
        })
        .count()
}

#[test]
fn a_run_gets_curves_a_retrieval_sheet_and_a_scatter() {
    let run = tempfile::tempdir().unwrap();
    train(run.path(), 1);
    let series = RunSeries::load(run.path()).unwrap();
    assert_eq!(series.loss.len(), 4);
    assert_eq!(series.knn_top1.len(), 2);
    // SELFSUP_KEEP_REPORT=DIR keeps the pictures for a look.
    let temp = tempfile::tempdir().unwrap();
    let out = std::env::var("SELFSUP_KEEP_REPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| temp.path().to_path_buf());
    let data = ReportData {
        bank: sample(),
        queries: sample(),
    };
    let files = write_report(
        &[run.path().to_path_buf()],
        Some(&data),
        &out,
        &Device::flex(),
    )
    .unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names, [TRAINING_PNG, RETRIEVAL_PNG, PCA_PNG]);
    let sizes = [(1200, 1050), (9 * 70 + 12, 18 + 6 + 8 * 88), (1066, 800)];
    for (file, size) in files.iter().zip(sizes) {
        let image = image::open(file).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), size, "{}", file.display());
        assert!(variance(&image) > 100.0, "{} is blank", file.display());
    }
}

#[test]
fn two_runs_overlay_in_one_picture() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train(a.path(), 1);
    train(b.path(), 2);
    let out = tempfile::tempdir().unwrap();
    let files = write_report(
        &[a.path().to_path_buf(), b.path().to_path_buf()],
        None,
        out.path(),
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(files.len(), 1, "no data: the curves only");
    let image = image::open(&files[0]).unwrap().to_rgb8();
    for colour in [[31, 119, 180], [214, 39, 40]] {
        assert!(
            pixels_near(&image, colour) > 200,
            "the run drawn in {colour:?} is missing"
        );
    }
    // A metrics file without steps is an error naming it.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("metrics.jsonl"), "").unwrap();
    let e = RunSeries::load(empty.path()).unwrap_err().to_string();
    assert!(e.contains("metrics.jsonl") && e.contains("no step"), "{e}");
}

#[test]
fn pca_keeps_a_planar_cloud_intact_and_orders_the_components() {
    // Points in a tilted plane of 3-D space, spread 10 times more along one direction.
    let (u, v) = ([0.6f32, 0.8, 0.0], [0.0f32, 0.0, 1.0]);
    let mut points = Vec::new();
    for i in 0..60 {
        let a = 10.0 * ((i as f32 * 0.37).sin());
        let b = (i as f32 * 1.3).cos();
        points.extend((0..3).map(|k| a * u[k] + b * v[k] + 5.0));
    }
    let projected = principal_components_2d(&points, 60, 3).unwrap();
    // Onto its own plane the projection keeps every distance.
    for i in 0..60 {
        for j in 0..i {
            let d3: f64 = (0..3)
                .map(|k| f64::from(points[i * 3 + k] - points[j * 3 + k]).powi(2))
                .sum::<f64>()
                .sqrt();
            let (pi, pj) = (projected[i], projected[j]);
            let d2 = ((pi.0 - pj.0).powi(2) + (pi.1 - pj.1).powi(2)).sqrt();
            assert!(
                (d3 - d2).abs() < 1e-3 * d3.max(1.0),
                "{i}, {j}: {d3} vs {d2}"
            );
        }
    }
    let spread = |f: fn(&(f64, f64)) -> f64| projected.iter().map(|p| f(p).powi(2)).sum::<f64>();
    assert!(spread(|p| p.0) > 10.0 * spread(|p| p.1));
    assert!(principal_components_2d(&points[..3], 1, 3).is_err());
}

#[test]
fn an_mae_run_gets_a_reconstruction_sheet_that_keeps_the_visible_patches() {
    use selfsup::backbone::VitConfig;
    use selfsup::method::MaeConfig;
    use selfsup::report::RECONSTRUCTION_PNG;
    let dir = tempfile::tempdir().unwrap();
    let method = AnyMethodConfig::Mae(MaeConfig {
        patch_size: 8,
        decoder_depth: 1,
        decoder_dim: 16,
        decoder_heads: 2,
        ..MaeConfig::preset(Preset::Cifar)
    });
    let backbone = BackboneConfig::Vit(VitConfig::new(32, 8, 1, 2, 16, 32));
    let mut c = PretrainConfig::cifar(method, backbone, 1);
    c.loader = LoaderConfig {
        batch_size: 8,
        workers: 2,
        ..LoaderConfig::default()
    };
    c.progress = false;
    c.output_dir = Some(dir.path().to_path_buf());
    pretrain_with(&c, sample(), &Device::flex(), PretrainOptions::default()).unwrap();
    let data = ReportData {
        bank: sample(),
        queries: sample(),
    };
    let out = dir.path().join("report");
    let files = write_report(
        &[dir.path().to_path_buf()],
        Some(&data),
        &out,
        &Device::flex(),
    )
    .unwrap();
    assert!(files.contains(&out.join(RECONSTRUCTION_PNG)));
    let sheet = image::open(out.join(RECONSTRUCTION_PNG)).unwrap().to_rgb8();
    // 8 images in rows of three 96-pixel pictures with 4-pixel gaps.
    assert_eq!(sheet.dimensions(), (3 * 100 + 4, 8 * 100 + 4));
    // 4 x 4 patches of 24 sheet pixels (8 image pixels): 75% masked, grey in column 2 and
    // predicted in column 3; the visible ones equal the image in both.
    let cell =
        |col: u32, row: u32, x: u32, y: u32| *sheet.get_pixel(4 + col * 100 + x, 4 + row * 100 + y);
    for row in 0..8 {
        let mut grey = 0;
        let mut kept = 0;
        for patch in 0..16 {
            let (x, y) = ((patch % 4) * 24 + 12, (patch / 4) * 24 + 12);
            let masked = cell(1, row, x, y);
            if masked.0 == [128, 128, 128] && cell(0, row, x, y) != masked {
                grey += 1;
            } else {
                assert_eq!(
                    cell(2, row, x, y),
                    cell(0, row, x, y),
                    "a visible patch changed"
                );
                kept += 1;
            }
        }
        assert!(
            grey >= 10 && kept >= 3,
            "row {row}: {grey} masked, {kept} kept"
        );
    }
}
