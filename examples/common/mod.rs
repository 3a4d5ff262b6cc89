#![allow(dead_code)] // Each example uses a part of these helpers.
//! Shared by the per-method examples: the bundled CIFAR-10 sample, a short run, a kNN report.

use std::sync::Arc;

use selfsup::augment::ViewTransform;
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::data::{ImageDataset, LoaderConfig, PackedImages};
use selfsup::method::{AnyMethodConfig, MethodConfig, Preset};
use selfsup::prelude::*;
use selfsup::train::{KnnEvaluation, PretrainConfig, PretrainOptions, pretrain_with};

/// The bundled training and validation packs.
pub fn sample() -> selfsup::Result<(Arc<dyn ImageDataset>, Arc<dyn ImageDataset>)> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    Ok((
        Arc::new(PackedImages::open(format!(
            "{data}/cifar10-sample-train.pack"
        ))?),
        Arc::new(PackedImages::open(format!(
            "{data}/cifar10-sample-val.pack"
        ))?),
    ))
}

/// The built-in method `name` with its CIFAR defaults.
pub fn method(name: &str) -> AnyMethodConfig {
    AnyMethodConfig::preset(name, Preset::Cifar).expect("a built-in method")
}

/// A short CPU recipe for `method`: the tiny convnet, 32-pixel views, batch 128, the method's
/// CIFAR recipe (views, optimiser, schedules) with one warmup epoch, heads at a quarter of
/// paper size.
pub fn short_recipe(method: AnyMethodConfig, epochs: usize) -> PretrainConfig {
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(32));
    let mut config = PretrainConfig::cifar(method, backbone, epochs);
    config.head_width = 0.25;
    config.loader = LoaderConfig {
        batch_size: 128,
        ..LoaderConfig::default()
    };
    // One epoch of linear warmup: VICReg and Barlow Twins diverge without it at this rate.
    config.lr.warmup_epochs = 1;
    config.knn.k = 20;
    config.knn_every_epochs = epochs;
    config
}

/// Pretrains with `config` on the bundled sample and prints the loss and kNN accuracy.
pub fn run(config: &PretrainConfig) -> selfsup::Result<()> {
    let (train, val) = sample()?;
    let options = PretrainOptions {
        knn: Some(KnnEvaluation {
            bank: train.clone(),
            queries: val,
            transform: ViewTransform::eval(None, 32),
            batch_size: 500,
        }),
        ..Default::default()
    };
    println!(
        "{}: {} epochs on {} images",
        config.method.name(),
        config.epochs,
        train.len()
    );
    let trained = pretrain_with(config, train, &Device::flex(), options)?;
    for e in &trained.history {
        println!(
            "epoch {}: loss {:.4}, embedding std {:.4}, energy gap {:.3}{}",
            e.epoch + 1,
            e.loss,
            e.embedding_std,
            e.energy_gap,
            e.knn_top1
                .map(|a| format!(", kNN top-1 {:.1}%", 100.0 * a))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// A small CIFAR ViT for the masked-image examples: 4-pixel patches on 32-pixel images, 4
/// blocks of width 96 (3 heads), class-token pooling.
pub fn small_vit() -> BackboneConfig {
    BackboneConfig::Vit(selfsup::backbone::VitConfig::new(32, 4, 4, 3, 96, 384))
}
