//! Bring your own encoder: any burn module that implements `selfsup::backbone::Encoder`
//! trains with every objective, views, optimiser, checkpoint and monitor of the library.
//!
//! `cargo run --release --example custom_backbone`

mod common;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use selfsup::backbone::Encoder;
use selfsup::prelude::*;
use selfsup::train::{PretrainOptions, pretrain_encoder};

/// A depthwise-separable convnet: 3x3 depthwise + 1x1 pointwise blocks, average-pooled.
#[derive(Module, Debug)]
struct SeparableNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    depthwise: Vec<Conv2d>,
    pointwise: Vec<Conv2d>,
    norms: Vec<BatchNorm>,
    features: usize,
}

impl SeparableNet {
    fn new(width: usize, device: &Device) -> Self {
        let pad = || PaddingConfig2d::Explicit(1, 1, 1, 1);
        let mut depthwise = Vec::new();
        let mut pointwise = Vec::new();
        let mut norms = Vec::new();
        let mut channels = width;
        for _ in 0..3 {
            depthwise.push(
                Conv2dConfig::new([channels, channels], [3, 3])
                    .with_groups(channels)
                    .with_stride([2, 2])
                    .with_padding(pad())
                    .with_bias(false)
                    .init(device),
            );
            pointwise.push(
                Conv2dConfig::new([channels, 2 * channels], [1, 1])
                    .with_bias(false)
                    .init(device),
            );
            norms.push(BatchNormConfig::new(2 * channels).init(device));
            channels *= 2;
        }
        Self {
            stem: Conv2dConfig::new([3, width], [3, 3])
                .with_padding(pad())
                .with_bias(false)
                .init(device),
            stem_bn: BatchNormConfig::new(width).init(device),
            depthwise,
            pointwise,
            norms,
            features: channels,
        }
    }
}

impl Encoder for SeparableNet {
    fn encode(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.stem_bn.forward(self.stem.forward(images)));
        for ((dw, pw), bn) in self.depthwise.iter().zip(&self.pointwise).zip(&self.norms) {
            x = relu(bn.forward(pw.forward(dw.forward(x))));
        }
        let [b, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([b, c])
    }

    fn feature_dim(&self) -> usize {
        self.features
    }

    fn input_channels(&self) -> Option<usize> {
        Some(3)
    }
}

fn main() -> selfsup::Result<()> {
    let (train, _) = common::sample()?;
    let config = common::short_recipe(common::method("simsiam"), 2);
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    train_device.seed(0);
    // The encoder lives on the autodiff device, where training runs.
    let encoder = SeparableNet::new(32, &train_device);
    println!("custom encoder with {} features", encoder.feature_dim());
    let trained = pretrain_encoder(
        &config,
        encoder,
        "SeparableNet(width 32)",
        train,
        &device,
        PretrainOptions::default(),
    )?;
    for e in &trained.history {
        println!(
            "epoch {}: loss {:.4}, energy gap {:.3}",
            e.epoch + 1,
            e.loss,
            e.energy_gap
        );
    }
    // The trained encoder, ready for your downstream task.
    let encoder = trained.backbone();
    let features = encoder.encode(Tensor::zeros([2, 3, 32, 32], &device));
    println!("features of two images: {:?}", features.dims());
    Ok(())
}
