//! Backbone shapes and parameter counts against torchvision.

mod common;

use common::*;
use selfsup::backbone::{ConvNetConfig, Encoder, ResNetConfig, Stem, trainable_parameters};

#[test]
fn resnet_parameter_counts_equal_torchvision_without_fc() {
    let d = device();
    // torchvision resnet18 / 34 / 50 minus fc (512*1000+1000, 512*1000+1000, 2048*1000+1000).
    for (config, expected) in [
        (ResNetConfig::resnet18(), 11_176_512),
        (ResNetConfig::resnet34(), 21_284_672),
        (ResNetConfig::resnet50(), 23_508_032),
    ] {
        let model = config.init(&d).unwrap();
        assert_eq!(trainable_parameters(&model), expected, "{:?}", config.depth);
    }
}

#[test]
fn cifar_stem_differs_only_in_the_first_convolution() {
    let d = device();
    let imagenet = trainable_parameters(&ResNetConfig::resnet18().init(&d).unwrap());
    let cifar = trainable_parameters(
        &ResNetConfig::resnet18()
            .with_stem(Stem::Cifar)
            .init(&d)
            .unwrap(),
    );
    assert_eq!(imagenet - cifar, 64 * 3 * (49 - 9));
}

#[test]
fn forward_shapes_and_feature_dims() {
    let d = device();
    let resnet = ResNetConfig::resnet18()
        .with_stem(Stem::Cifar)
        .with_width(8)
        .init(&d)
        .unwrap();
    let x = random([2, 3, 16, 16], 1, &d);
    assert_eq!(resnet.encode(x.clone()).dims(), [2, 64]);
    assert_eq!(resnet.feature_dim(), 64);

    let resnet50 = ResNetConfig::resnet50().with_width(4).init(&d).unwrap();
    let x = random([2, 3, 32, 32], 2, &d);
    assert_eq!(resnet50.encode(x).dims(), [2, 4 * 8 * 4]);
    assert_eq!(ResNetConfig::resnet50().with_width(4).feature_dim(), 128);

    let convnet = ConvNetConfig::new().with_width(4).init(&d).unwrap();
    assert_eq!(
        convnet.encode(random([3, 3, 12, 12], 3, &d)).dims(),
        [3, 16]
    );
    assert_eq!(ConvNetConfig::new().with_width(4).feature_dim(), 16);
}

#[test]
fn zero_init_residual_zeroes_the_last_batchnorm_of_each_block() {
    let d = burn::tensor::Device::flex();
    let model = ResNetConfig::resnet18()
        .with_width(4)
        .with_zero_init_residual(true)
        .init(&d)
        .unwrap();
    for block in model.layer1.iter().chain(&model.layer4) {
        assert!(values(&block.bn2.gamma.val()).iter().all(|&g| g == 0.0));
        assert!(values(&block.bn1.gamma.val()).iter().all(|&g| g == 1.0));
    }
    let bottleneck = ResNetConfig::resnet50()
        .with_width(4)
        .with_zero_init_residual(true)
        .init(&d)
        .unwrap();
    let bn3 = bottleneck.layer2[0].bn3.as_ref().unwrap();
    assert!(values(&bn3.gamma.val()).iter().all(|&g| g == 0.0));
}

#[test]
fn invalid_backbone_configs_are_errors() {
    let d = burn::tensor::Device::flex();
    assert!(ResNetConfig::resnet18().with_width(0).init(&d).is_err());
    assert!(ConvNetConfig::new().with_stages(0).init(&d).is_err());
}
