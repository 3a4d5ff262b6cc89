//! Quickstart: pretrain an encoder on the bundled sample of real CIFAR-10 images (4,000
//! unlabelled training images), then evaluate it with kNN and a linear probe on 1,000 held-out
//! images, next to a randomly initialised encoder of the same architecture.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Recipe, chosen by measuring what learns fastest on 2 CPU cores (BENCHMARKS.md): VICReg
//! (its projector at a quarter of the paper's 8192 width), the tiny convnet (3 stages, 32 to
//! 128 channels), 32-pixel views without blur, batch 64, LARS (VICReg's CIFAR preset: momentum
//! 0.9, weight decay 1e-4, eta 0.02) with lr 0.3 x 64 / 256 after a one-epoch warmup, cosine,
//! 6 epochs; kNN with k = 20 over the 4,000 training images. Change
//! it with `SELFSUP_QS_METHOD` (byol, simsiam, barlow, vicreg, swav, simclr),
//! `SELFSUP_QS_EPOCHS`, `SELFSUP_QS_WIDTH`, `SELFSUP_QS_STAGES`, `SELFSUP_QS_BATCH`,
//! `SELFSUP_QS_LR`, `SELFSUP_QS_HEAD_WIDTH`, `SELFSUP_QS_OPTIMIZER` (`sgd`: momentum 0.9,
//! weight decay 5e-4; `lars`; default: the method's CIFAR preset, LARS for VICReg, SGD for the
//! others). `SELFSUP_QS_OUT=DIR` keeps the checkpoint and metrics there and draws the report
//! (training curves, retrieval sheet, PCA scatter; the README shows them).

use std::sync::Arc;
use std::time::Instant;

use selfsup::augment::ViewTransform;
use selfsup::backbone::{Backbone, BackboneConfig, ConvNetConfig};
use selfsup::data::{ImageDataset, LoaderConfig, PackedImages};
use selfsup::eval::LinearProbeConfig;
use selfsup::method::{AnyMethodConfig, MethodConfig, Preset, SimClrConfig};
use selfsup::prelude::*;
use selfsup::report::{ReportData, write_report};
use selfsup::train::{
    KnnEvaluation, OptimizerConfig, PretrainConfig, PretrainOptions, frozen_evaluation,
    init_backbone, pretrain_with,
};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> selfsup::Result<()> {
    let started = Instant::now();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    let train: Arc<dyn ImageDataset> = Arc::new(PackedImages::open(format!(
        "{data}/cifar10-sample-train.pack"
    ))?);
    let val: Arc<dyn ImageDataset> = Arc::new(PackedImages::open(format!(
        "{data}/cifar10-sample-val.pack"
    ))?);
    println!(
        "bundled CIFAR-10 sample: {} training images, {} validation images, {} classes",
        train.len(),
        val.len(),
        train.classes().len()
    );

    let method = match env("SELFSUP_QS_METHOD", "vicreg".to_string()).as_str() {
        "simclr" => AnyMethodConfig::SimClr(SimClrConfig {
            temperature: env("SELFSUP_QS_TEMP", 0.5),
        }),
        "barlow" => AnyMethodConfig::barlow_twins(Preset::Cifar),
        name => AnyMethodConfig::preset(name, Preset::Cifar)?,
    };
    let backbone = BackboneConfig::ConvNet(
        ConvNetConfig::new()
            .with_width(env("SELFSUP_QS_WIDTH", 32))
            .with_stages(env("SELFSUP_QS_STAGES", 3)),
    );
    let mut config = PretrainConfig::cifar(method, backbone, env("SELFSUP_QS_EPOCHS", 6));
    config.head_width = env("SELFSUP_QS_HEAD_WIDTH", 0.25);
    config.loader = LoaderConfig {
        batch_size: env("SELFSUP_QS_BATCH", 64),
        seed: 0,
        ..LoaderConfig::default()
    };
    // The method's CIFAR preset (VICReg: LARS; the others: SGD) unless SELFSUP_QS_OPTIMIZER says.
    match std::env::var("SELFSUP_QS_OPTIMIZER").as_deref() {
        Err(_) => {}
        Ok("lars") => config.optimizer = OptimizerConfig::lars(0.02, 1e-4),
        Ok("sgd") => config.optimizer = OptimizerConfig::cifar_sgd(),
        Ok(other) => {
            return Err(selfsup::Error::invalid_config(
                "SELFSUP_QS_OPTIMIZER",
                other,
                "sgd or lars",
            ));
        }
    }
    config.lr.base_lr = env("SELFSUP_QS_LR", 0.3);
    config.lr.warmup_epochs = 1;
    config.knn_every_epochs = env("SELFSUP_QS_KNN_EVERY", 0);
    let out = std::env::var("SELFSUP_QS_OUT")
        .ok()
        .map(std::path::PathBuf::from);
    config.output_dir = out.clone();
    config.knn.k = 20;

    let device = Device::flex();
    let eval = KnnEvaluation {
        bank: train.clone(),
        queries: val.clone(),
        transform: ViewTransform::eval(None, 32),
        batch_size: 500,
    };
    // kNN and linear-probe top-1 of an encoder on the held-out images.
    let evaluate = |encoder: &Backbone| -> selfsup::Result<(f64, f64)> {
        let scores = frozen_evaluation(
            encoder,
            &eval,
            config.knn,
            &LinearProbeConfig::default(),
            &device,
        )?;
        Ok((scores.knn_top1, scores.probe.top1))
    };

    // The same architecture, randomly initialised with the same seed.
    let (random_knn, random_probe) = evaluate(&init_backbone(&config, &device)?.valid())?;

    println!(
        "pretraining {} on {} images for {} epochs ({} steps of {})",
        config.method.name(),
        train.len(),
        config.epochs,
        config.epochs * (train.len() / config.loader.batch_size),
        config.loader.batch_size
    );
    let options = PretrainOptions {
        knn: Some(eval.clone()),
        ..Default::default()
    };
    let trained = pretrain_with(&config, train.clone(), &device, options)?;
    let (trained_knn, trained_probe) = evaluate(&trained.backbone())?;

    print_comparison(
        val.len(),
        &format!("{} epochs of {}", config.epochs, config.method.name()),
        (random_knn, random_probe),
        (trained_knn, trained_probe),
    );
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    if let Some(out) = &out {
        let data = ReportData {
            bank: train.clone(),
            queries: val.clone(),
        };
        for file in write_report(std::slice::from_ref(out), Some(&data), out, &device)? {
            println!("wrote {}", file.display());
        }
    }
    Ok(())
}

/// Prints kNN and probe top-1 of the random-init and the trained encoder, and the gain.
fn print_comparison(images: usize, trained_label: &str, random: (f64, f64), trained: (f64, f64)) {
    println!();
    println!("validation top-1 on {images} held-out images      kNN (k=20)   linear probe");
    println!(
        "random-init encoder (same architecture)     {:>6.2}%      {:>6.2}%",
        100.0 * random.0,
        100.0 * random.1
    );
    println!(
        "after {trained_label:<37} {:>6.2}%      {:>6.2}%",
        100.0 * trained.0,
        100.0 * trained.1
    );
    println!(
        "gain                                        {:>+6.2}      {:>+6.2}  points",
        100.0 * (trained.0 - random.0),
        100.0 * (trained.1 - random.1)
    );
}
