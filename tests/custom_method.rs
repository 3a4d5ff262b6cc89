//! A method is one file: a toy method written here through the public API alone trains,
//! checkpoints its state, resumes exactly, and has a hook change its scheduled value.

use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use selfsup::augment::ViewTransform;
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::data::{ImageDataset, ImageFolder, LoaderConfig};
use selfsup::energy::cosine_similarity;
use selfsup::method::{
    Heads, Method, MethodConfig, MethodSetup, Progress, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, buffer, set_buffer,
};
use selfsup::model::ProjectionHeadConfig;
use selfsup::optim::{EmaConfig, LrConfig, OptimizerConfig};
use selfsup::train::{
    CHECKPOINT_FILE, Checkpoint, Control, PretrainConfig, PretrainOptions, pretrain_with,
};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

/// The toy method's configuration: alignment of two views plus a variance hinge (a tiny
/// VICReg), weighted by a scheduled value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ToyConfig {
    variance_weight: f64,
}

impl MethodConfig for ToyConfig {
    type Method = Toy;

    fn name(&self) -> &'static str {
        "Toy"
    }

    fn validate(&self) -> selfsup::Result<()> {
        if self.variance_weight >= 0.0 {
            Ok(())
        } else {
            Err(selfsup::Error::invalid_config(
                "method.variance_weight",
                self.variance_weight,
                ">= 0",
            ))
        }
    }

    fn heads(&self, feature_dim: usize, _width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::byol_projector(feature_dim, 16, 8),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        Recipe {
            views: ViewTransform::vicreg(context.preset.scale()),
            optimizer: OptimizerConfig::sgd(5e-4),
            lr: LrConfig::per_256(0.1),
            ema: EmaConfig::to_one(0.99),
        }
    }

    fn init(&self, _setup: &MethodSetup, device: &Device) -> selfsup::Result<Toy> {
        Ok(Toy {
            mean_norm: buffer(Tensor::zeros([1], device)),
            variance_weight: self.variance_weight,
        })
    }
}

/// The toy method's module: a running mean of the embeddings' norm is its state.
#[derive(Module, Debug)]
struct Toy {
    mean_norm: Param<Tensor<1>>,
    variance_weight: f64,
}

impl Method for Toy {
    fn name(&self) -> &'static str {
        "Toy"
    }

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    fn schedule(&self, progress: &Progress) -> Vec<(&'static str, f64)> {
        vec![("variance_scale", 1.0 + progress.epoch as f64)]
    }

    fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> selfsup::Result<Tensor<1>> {
        let [a, b, ..] = views.projections.as_slice() else {
            panic!("two views")
        };
        let scale = context.values.method_value("variance_scale")?;
        let align = cosine_similarity(a.clone(), b.clone())
            .mean()
            .neg()
            .add_scalar(1.0);
        let std = a.clone().var(0).add_scalar(1e-4).sqrt();
        let hinge = std.neg().add_scalar(1.0).clamp_min(0.0).mean();
        Ok(align + hinge.mul_scalar(self.variance_weight * scale))
    }

    fn after_step(self, views: &ViewEmbeddings, _context: &StepContext) -> selfsup::Result<Self> {
        let norm = views.projections[0]
            .clone()
            .detach()
            .square()
            .sum_dim(1)
            .sqrt()
            .mean();
        let updated = self.mean_norm.val().mul_scalar(0.9) + norm.mul_scalar(0.1);
        Ok(Self {
            mean_norm: set_buffer(self.mean_norm, updated),
            ..self
        })
    }
}

fn sample() -> Arc<dyn ImageDataset> {
    Arc::new(ImageFolder::open(SAMPLE).unwrap().with_cache(true))
}

fn config(dir: &std::path::Path, epochs: usize) -> PretrainConfig<ToyConfig> {
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(8).with_stages(2));
    let mut c = PretrainConfig::cifar(
        ToyConfig {
            variance_weight: 1.0,
        },
        backbone,
        epochs,
    );
    c.loader = LoaderConfig {
        batch_size: 8,
        shuffle: true,
        seed: 3,
        drop_last: true,
        workers: 2,
        prefetch: 0,
    };
    c.progress = false;
    c.output_dir = Some(dir.to_path_buf());
    c
}

/// Runs `config`, returning the per-step losses and scheduled values, and the final state.
fn run(
    config: &PretrainConfig<ToyConfig>,
    resume: bool,
    stop_at: Option<usize>,
    hook: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let sink = seen.clone();
    let options = PretrainOptions {
        on_step: Some(Box::new(move |m| {
            let mut s = sink.lock().unwrap();
            s.0.push(m.loss);
            s.1.push(m.method_values["variance_scale"]);
            if Some(m.step) == stop_at {
                Control::Stop
            } else {
                Control::Continue
            }
        })),
        on_schedule: hook.then(|| {
            Box::new(
                |_: &Progress, values: &mut selfsup::method::ScheduleValues| {
                    values.method.insert("variance_scale".into(), 5.0);
                },
            ) as selfsup::train::ScheduleHook
        }),
        resume: resume.then(|| config.output_dir.clone().unwrap().join(CHECKPOINT_FILE)),
        ..Default::default()
    };
    let trained = pretrain_with(config, sample(), &Device::flex(), options).unwrap();
    let state = trained
        .model
        .method
        .mean_norm
        .val()
        .into_data()
        .convert::<f64>()
        .try_to_vec()
        .unwrap();
    let (losses, scales) = seen.lock().unwrap().clone();
    (losses, scales, state)
}

#[test]
fn a_method_written_outside_the_crate_trains_checkpoints_and_resumes() {
    let full = tempfile::tempdir().unwrap();
    let (losses, scales, state) = run(&config(full.path(), 3), false, None, false);
    assert_eq!(losses.len(), 6);
    assert!(losses.iter().all(|l| l.is_finite()));
    // The method's own schedule reached the step.
    assert_eq!(scales, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    assert!(state[0] > 0.0, "the method's state was updated");
    // Its state is in the checkpoint, with its configuration.
    let ckpt = Checkpoint::<ToyConfig>::read_as(full.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(ckpt.meta.config.method.variance_weight, 1.0);

    // Interrupted in the third epoch, resumed: the same curve and the same state.
    let dir = tempfile::tempdir().unwrap();
    let (first, _, _) = run(&config(dir.path(), 3), false, Some(4), false);
    assert_eq!(first[..4], losses[..4]);
    let (second, _, resumed) = run(&config(dir.path(), 3), true, None, false);
    assert_eq!(second, losses[4..]);
    assert_eq!(resumed, state);
}

#[test]
fn a_schedule_hook_changes_the_values_the_method_sees() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 1);
    c.output_dir = None;
    let (_, scales, _) = run(&c, false, None, true);
    assert_eq!(scales, vec![5.0, 5.0]);
}
