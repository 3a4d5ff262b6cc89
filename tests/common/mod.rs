//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

/// The device under test, with autodiff: the CPU (`Device::flex()`), or the GPU of
/// [`gpu_choice`] when `SELFSUP_TEST_DEVICE=wgpu` and the `wgpu` feature is on (CI runs the
/// fixture tests both ways, wgpu on Mesa's lavapipe).
pub fn device() -> Device {
    plain_device().autodiff()
}

/// The device under test, without autodiff.
pub fn plain_device() -> Device {
    match std::env::var("SELFSUP_TEST_DEVICE").as_deref() {
        Ok("wgpu") => wgpu_device(),
        _ => Device::flex(),
    }
}

/// The GPU the GPU tests run on: wgpu, or wgpu pinned to Vulkan with the SPIR-V compiler when
/// `SELFSUP_TEST_GPU=vulkan` (needs the `vulkan` feature).
pub fn gpu_choice() -> selfsup::device::DeviceChoice {
    match std::env::var("SELFSUP_TEST_GPU").as_deref() {
        Ok("vulkan") => selfsup::device::DeviceChoice::Vulkan,
        _ => selfsup::device::DeviceChoice::Wgpu,
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Device {
    selfsup::device::select_device(gpu_choice()).unwrap()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Device {
    panic!("SELFSUP_TEST_DEVICE=wgpu needs `cargo test --features wgpu`")
}

/// Loads `tests/fixtures/{name}`.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Flattens a nested JSON array into values and shape.
pub fn flatten(value: &Value) -> (Vec<f64>, Vec<usize>) {
    fn walk(v: &Value, depth: usize, out: &mut Vec<f64>, shape: &mut Vec<usize>) {
        match v {
            Value::Array(items) => {
                if shape.len() <= depth {
                    shape.push(items.len());
                }
                for item in items {
                    walk(item, depth + 1, out, shape);
                }
            }
            Value::Number(n) => out.push(n.as_f64().unwrap()),
            other => panic!("unexpected {other}"),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    walk(value, 0, &mut out, &mut shape);
    (out, shape)
}

/// A tensor of rank `D` from a nested JSON array, on `device`.
pub fn tensor<const D: usize>(value: &Value, device: &Device) -> Tensor<D> {
    let (values, shape) = flatten(value);
    assert_eq!(shape.len(), D, "fixture rank");
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A leaf tensor that requires gradients.
pub fn leaf<const D: usize>(value: &Value, device: &Device) -> Tensor<D> {
    tensor::<D>(value, device).require_grad()
}

/// The values of a tensor as `f64`.
pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.clone()
        .without_autodiff()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Asserts `|a - b| <= 1e-5 + 1e-4 |b|` elementwise, `b` the reference.
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64]) {
    assert_close_tol(what, actual, expected, 1e-5, 1e-4);
}

/// Asserts `|a - b| <= atol + rtol |b|` elementwise.
pub fn assert_close_tol(what: &str, actual: &[f64], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, b)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}[{i}]: got {a}, expected {b} (diff {})",
            (a - b).abs()
        );
    }
}

/// Asserts a tensor matches a nested JSON array.
pub fn assert_tensor<const D: usize>(what: &str, actual: &Tensor<D>, expected: &Value) {
    let (exp, shape) = flatten(expected);
    assert_eq!(actual.dims().to_vec(), shape, "{what}: shape");
    assert_close(what, &values(actual), &exp);
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// A random tensor of the given shape.
pub fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(random_values(n, seed), shape.to_vec()),
        device,
    )
}

use burn::module::{Module, ModuleVisitor, Param};
use selfsup::backbone::{Backbone, BackboneConfig, ConvNetConfig};
use selfsup::method::{AnyMethodConfig, Method, Progress, ScheduleValues, StepContext};
use selfsup::optim::{EmaSchedule, GroupedOptimizer, OptimizerConfig, ParamGroups};
use selfsup::step::{SelfSupervised, StepReport, train_step_masked};
use selfsup::train::{PretrainConfig, build_model};

/// A tiny convnet backbone (width 4, 2 stages: 8 features).
pub fn tiny_backbone(device: &Device) -> Backbone {
    tiny_backbone_config().init(device).unwrap()
}

/// The configuration of [`tiny_backbone`].
pub fn tiny_backbone_config() -> BackboneConfig {
    BackboneConfig::ConvNet(ConvNetConfig::new().with_width(4).with_stages(2))
}

/// Images in the (imaginary) training set of [`tiny_model`]: the size of DeepCluster's bank.
pub const TINY_DATASET: usize = 64;

/// A run configuration for `method` on the tiny convnet, heads at 1/16 of the paper sizes.
pub fn tiny_config(method: AnyMethodConfig) -> PretrainConfig {
    let mut c = PretrainConfig::cifar(method, tiny_backbone_config(), 1);
    c.head_width = 1.0 / 16.0;
    c
}

/// A tiny model for `method` with heads at 1/16 of the paper sizes, initialised from a fixed
/// seed.
pub fn tiny_model(method: &AnyMethodConfig, device: &Device) -> SelfSupervised<Backbone> {
    device.seed(7);
    let config = tiny_config(method.clone());
    build_model(&config, tiny_backbone(device), TINY_DATASET, device).unwrap()
}

/// Feature dimension of [`tiny_backbone`].
pub fn backbone_dim() -> usize {
    8
}

/// Steps a model by hand: SGD with momentum 0.9 (no weight decay), a constant learning rate,
/// and an EMA schedule of `total` steps from `tau_base` to 1.
pub struct Stepper {
    pub optimizer: GroupedOptimizer,
    pub lr: f64,
    pub ema: EmaSchedule,
    pub step: usize,
    pub total: usize,
    pub epoch: usize,
    /// The patch masks of masked-image methods' steps.
    pub masks: Option<selfsup::augment::Masks>,
}

impl Stepper {
    pub fn sgd<M: Method>(
        model: &SelfSupervised<Backbone, M>,
        lr: f64,
        total: usize,
        tau_base: f64,
    ) -> Self {
        let optimizer = GroupedOptimizer::new(
            &OptimizerConfig::sgd(0.0),
            &ParamGroups::rank_one_excluded(model),
            lr,
        )
        .unwrap();
        Self {
            optimizer,
            lr,
            ema: EmaSchedule::new(tau_base, total).unwrap(),
            step: 0,
            total,
            epoch: 0,
            masks: None,
        }
    }

    /// Where the stepper stands.
    pub fn progress(&self) -> Progress {
        Progress {
            step: self.step,
            epoch: self.epoch,
            steps_per_epoch: self.total,
            epochs: 1,
        }
    }

    /// The values the next step uses for `method`.
    pub fn values<M: Method>(&self, model: &SelfSupervised<Backbone, M>) -> ScheduleValues {
        let tau = model
            .embedding
            .target
            .is_some()
            .then(|| self.ema.tau(self.step));
        ScheduleValues::at(&self.progress(), &model.method, self.lr, 0.0, tau)
    }

    /// One training step on `views` (two global views), images `0..B`.
    pub fn step<M: Method>(
        &mut self,
        model: SelfSupervised<Backbone, M>,
        views: &[Tensor<4>],
    ) -> (SelfSupervised<Backbone, M>, StepReport) {
        self.try_step(model, views).unwrap()
    }

    /// [`Stepper::step`] returning the error.
    pub fn try_step<M: Method>(
        &mut self,
        model: SelfSupervised<Backbone, M>,
        views: &[Tensor<4>],
    ) -> selfsup::Result<(SelfSupervised<Backbone, M>, StepReport)> {
        let values = self.values(&model);
        let indices: Vec<usize> = (0..views[0].dims()[0]).collect();
        let context = StepContext {
            progress: self.progress(),
            values: &values,
            indices: &indices,
        };
        let global = views.len().min(2);
        let masks = self.masks.as_ref();
        let out = train_step_masked(model, views, global, masks, &context, &mut self.optimizer)?;
        self.step += 1;
        Ok(out)
    }
}

/// Every float tensor of a module (parameters and running statistics), with whether it is
/// trainable.
#[derive(Default)]
pub struct Collect {
    pub values: Vec<Vec<f64>>,
    pub trainable: Vec<bool>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.values.push(values(&param.val()));
        self.trainable.push(param.is_require_grad());
    }
}

/// [`Collect`] of `m`.
pub fn collect<M: Module>(m: &M) -> Collect {
    let mut c = Collect::default();
    m.visit(&mut c);
    c
}
