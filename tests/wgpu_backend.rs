//! The GPU code path: the same training steps on wgpu as on the CPU (CI runs this on Mesa's
//! lavapipe, a software Vulkan device). The fixture tests run on wgpu too, with
//! `SELFSUP_TEST_DEVICE=wgpu` (see `.ci/run`). `SELFSUP_TEST_GPU=vulkan` runs them on wgpu pinned
//! to Vulkan with cubecl's SPIR-V compiler (`--features vulkan`). burn's fusion and autotune are
//! on in both.
#![cfg(feature = "wgpu")]

mod common;

use burn::module::Module;
use selfsup::backbone::Backbone;
use selfsup::device::select_device;
use selfsup::method::{
    AnyMethodConfig, DeepClusterConfig, Method, MethodConfig, MocoConfig, Preset, SwavConfig,
};
use selfsup::prelude::Device;
use selfsup::step::SelfSupervised;

/// A model's record: weights and method state.
type ModelRecord = burn::store::ModuleRecord;

/// Every built-in method, with prototypes and queues that fit the tiny test.
fn methods() -> Vec<AnyMethodConfig> {
    AnyMethodConfig::NAMES
        .iter()
        // The masked-image methods need a ViT and masks: tests/masked_image.rs.
        .filter(|name| !matches!(**name, "mae" | "ijepa"))
        .map(
            |name| match AnyMethodConfig::preset(name, Preset::Cifar).unwrap() {
                AnyMethodConfig::Swav(c) => AnyMethodConfig::Swav(SwavConfig {
                    num_prototypes: 16,
                    ..c
                }),
                AnyMethodConfig::Moco(c) => AnyMethodConfig::Moco(MocoConfig {
                    queue_length: 32,
                    ..c
                }),
                AnyMethodConfig::DeepCluster(c) => {
                    AnyMethodConfig::DeepCluster(DeepClusterConfig {
                        num_prototypes: vec![4, 6],
                        ..c
                    })
                }
                other => other,
            },
        )
        .collect()
}

/// Two SGD steps of a tiny convnet on `device`, from the CPU model's initial weights and state
/// `weights` (one record for both devices: the device RNG is shared with the tests running in
/// parallel, so two CPU models built in turn could differ).
fn two_step_losses(method: &AnyMethodConfig, weights: &ModelRecord, device: &Device) -> Vec<f32> {
    let model = common::tiny_model(method, device).load_record(weights.clone());
    let mut model = SelfSupervised {
        method: model.method.start_epoch(0, 5).unwrap(),
        ..model
    };
    let mut stepper = common::Stepper::sgd(&model, 0.05, 2, 0.99);
    let views = [
        common::random([8, 3, 16, 16], 1, device),
        common::random([8, 3, 16, 16], 2, device),
    ];
    let mut losses = Vec::new();
    for _ in 0..2 {
        let (next, report) = stepper.step(model, &views);
        model = next;
        losses.push(report.loss);
    }
    losses
}

#[test]
fn two_training_steps_match_the_cpu_within_1e_3() {
    let wgpu = select_device(common::gpu_choice()).unwrap().autodiff();
    for method in methods() {
        let weights = common::tiny_model(&method, &Device::flex().autodiff()).into_record();
        let cpu = two_step_losses(&method, &weights, &Device::flex().autodiff());
        let gpu = two_step_losses(&method, &weights, &wgpu);
        for (c, g) in cpu.iter().zip(&gpu) {
            assert!(
                (c - g).abs() <= 1e-3 * c.abs().max(1.0),
                "{}: cpu {cpu:?} vs wgpu {gpu:?}",
                method.name()
            );
        }
    }
}

#[test]
fn pretraining_knn_and_the_linear_probe_run_on_wgpu() {
    use std::sync::Arc;

    use selfsup::augment::ViewTransform;
    use selfsup::backbone::{BackboneConfig, ConvNetConfig};
    use selfsup::data::{ImageDataset, ImageFolder, LoaderConfig};
    use selfsup::eval::{LinearProbeConfig, linear_probe};
    use selfsup::train::{KnnEvaluation, PretrainConfig, PretrainOptions, pretrain_with};

    let device = select_device(common::gpu_choice()).unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");
    let data: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(sample).unwrap().with_cache(true));
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(8).with_stages(2));
    let mut config = PretrainConfig::cifar(AnyMethodConfig::simsiam(Preset::Cifar), backbone, 1);
    config.head_width = 1.0 / 64.0;
    config.loader = LoaderConfig {
        batch_size: 10,
        workers: 2,
        ..LoaderConfig::default()
    };
    config.monitor.every_steps = 1;
    config.progress = false;
    let eval_view = ViewTransform::eval(None, 32);
    let options = PretrainOptions {
        knn: Some(KnnEvaluation {
            bank: data.clone(),
            queries: data.clone(),
            transform: eval_view.clone(),
            batch_size: 10,
        }),
        ..Default::default()
    };
    let trained = pretrain_with(&config, data.clone(), &device, options).unwrap();
    let epoch = &trained.history[0];
    assert!(epoch.loss.is_finite());
    assert!(epoch.effective_rank.unwrap() >= 1.0);
    assert!((0.0..=1.0).contains(&epoch.knn_top1.unwrap()));
    let probe = LinearProbeConfig {
        epochs: 2,
        ..LinearProbeConfig::default()
    };
    let report = linear_probe(
        &trained.backbone(),
        data.clone(),
        data,
        &eval_view,
        &probe,
        &device,
    )
    .unwrap();
    assert_eq!(report.num_samples, 20);
}

/// Two SGD steps of a 1-block ViT on 16-pixel images under fixed masks on `device`, from the
/// CPU model's initial weights `weights`.
fn vit_two_step_losses(
    method: &AnyMethodConfig,
    weights: &ModelRecord,
    device: &Device,
) -> Vec<f32> {
    use selfsup::augment::Masking;
    use selfsup::backbone::{BackboneConfig, VitConfig};
    let backbone = BackboneConfig::Vit(VitConfig::new(16, 4, 1, 2, 16, 32));
    let config = selfsup::train::PretrainConfig::cifar(method.clone(), backbone, 1);
    let mut model = vit_model(method, device).load_record(weights.clone());
    let mut stepper = common::Stepper::sgd(&model, 0.05, 2, 0.99);
    stepper.masks = config
        .views
        .masking
        .as_ref()
        .map(|m: &Masking| m.draw(16, 8, [4, 0, 0]).to_device(8, device));
    let views = [
        common::random([8, 3, 16, 16], 1, device),
        common::random([8, 3, 16, 16], 2, device),
    ];
    let count = if stepper.masks.is_some() { 1 } else { 2 };
    let mut losses = Vec::new();
    for _ in 0..2 {
        let (next, report) = stepper.step(model, &views[..count]);
        model = next;
        losses.push(report.loss);
    }
    losses
}

/// A 1-block ViT model of `method` on `device`.
fn vit_model(method: &AnyMethodConfig, device: &Device) -> SelfSupervised<Backbone> {
    use selfsup::backbone::{BackboneConfig, VitConfig};
    let backbone = BackboneConfig::Vit(VitConfig::new(16, 4, 1, 2, 16, 32));
    let config = selfsup::train::PretrainConfig::cifar(method.clone(), backbone.clone(), 1);
    selfsup::train::build_model(&config, backbone.init(device).unwrap(), 8, device).unwrap()
}

#[test]
fn vit_methods_two_training_steps_match_the_cpu_within_1e_3() {
    use selfsup::method::{IjepaConfig, MaeConfig};
    let wgpu = select_device(common::gpu_choice()).unwrap().autodiff();
    let methods = [
        AnyMethodConfig::Mae(MaeConfig {
            decoder_depth: 1,
            decoder_dim: 16,
            decoder_heads: 2,
            ..MaeConfig::preset(Preset::Cifar)
        }),
        AnyMethodConfig::Ijepa(IjepaConfig {
            predictor_depth: 1,
            predictor_dim: 8,
            predictor_heads: 2,
            ..IjepaConfig::preset(Preset::Cifar)
        }),
        AnyMethodConfig::dino(Preset::Cifar),
        AnyMethodConfig::lejepa(Preset::Cifar),
    ];
    for method in methods {
        let weights = vit_model(&method, &Device::flex().autodiff()).into_record();
        let cpu = vit_two_step_losses(&method, &weights, &Device::flex().autodiff());
        let gpu = vit_two_step_losses(&method, &weights, &wgpu);
        for (c, g) in cpu.iter().zip(&gpu) {
            assert!(
                (c - g).abs() <= 1e-3 * c.abs().max(1.0),
                "{}: cpu {cpu:?} vs wgpu {gpu:?}",
                method.name()
            );
        }
    }
}

/// The convolution lowered to one matrix product (`conv::conv2d_by_matmul`, the GPU
/// alternative to burn's convolution kernels) against burn's convolution on the same wgpu
/// device: forward and the input, weight and bias gradients, on a stride-1 3x3, a strided 3x3
/// and a strided 1x1 layer (odd sizes, batch 1 and 2).
#[test]
fn convolution_as_a_matrix_product_matches_burn_on_wgpu() {
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor, TensorData};
    use selfsup::conv::{TapsGeometry, conv2d_by_matmul};

    let device = select_device(common::gpu_choice()).unwrap().autodiff();
    let close = |what: &str, a: TensorData, b: TensorData| {
        let a = a.convert::<f32>().try_to_vec::<f32>().unwrap();
        let b = b.convert::<f32>().try_to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 + 1e-4 * y.abs(),
                "{what}, element {i}: {x} vs burn's {y}"
            );
        }
    };
    let normal = Distribution::Normal(0.0, 1.0);
    // (batch, channels in, size, channels out, kernel, stride, padding)
    for (batch, cin, size, cout, kernel, stride, padding) in [
        (2, 3, 7, 5, 3, 1, 1),
        (1, 4, 9, 6, 3, 2, 1),
        (2, 5, 8, 3, 1, 2, 0),
    ] {
        let x = Tensor::<4>::random([batch, cin, size, size], normal, &device).require_grad();
        let w = Tensor::<4>::random([cout, cin, kernel, kernel], normal, &device).require_grad();
        let bias = Tensor::<1>::random([cout], normal, &device).require_grad();
        let geometry = TapsGeometry {
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [1, 1],
        };
        let ours = conv2d_by_matmul(x.clone(), w.clone(), Some(bias.clone()), geometry).unwrap();
        let theirs = burn_conv2d(
            x.clone(),
            w.clone(),
            Some(bias.clone()),
            ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
        );
        let probe = Tensor::<4>::random(theirs.dims(), normal, &device);
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe).sum().backward();
        let case = format!("{:?}", (batch, cin, size, cout, kernel, stride, padding));
        close(
            &format!("forward {case}"),
            ours.into_data(),
            theirs.into_data(),
        );
        let grad = |t: &Tensor<4>, g| t.grad(g).unwrap().into_data();
        close(
            &format!("input grad {case}"),
            grad(&x, &g_ours),
            grad(&x, &g_theirs),
        );
        close(
            &format!("weight grad {case}"),
            grad(&w, &g_ours),
            grad(&w, &g_theirs),
        );
        close(
            &format!("bias grad {case}"),
            bias.grad(&g_ours).unwrap().into_data(),
            bias.grad(&g_theirs).unwrap().into_data(),
        );
    }
}
