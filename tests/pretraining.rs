//! The pretraining loop: metrics, hooks, kNN monitor, checkpoints, exact resume, bad input.

mod common;

use std::sync::{Arc, Mutex};

use selfsup::augment::ViewTransform;
use selfsup::backbone::{BackboneConfig, ConvNetConfig, VitConfig};
use selfsup::data::{ImageDataset, ImageFolder, LoaderConfig};
use selfsup::method::{
    AnyMethodConfig, DeepClusterConfig, IjepaConfig, MaeConfig, MethodConfig, MocoConfig, Preset,
    RecipeContext,
};
use selfsup::train::{
    CHECKPOINT_FILE, Checkpoint, Control, KnnEvaluation, METRICS_FILE, OptimizerConfig,
    PretrainConfig, PretrainOptions, load_backbone, pretrain, pretrain_with,
};
use selfsup::{Error, prelude::Device};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

fn sample() -> Arc<dyn ImageDataset> {
    Arc::new(ImageFolder::open(SAMPLE).unwrap().with_cache(true))
}

fn tiny_config(
    objective: AnyMethodConfig,
    epochs: usize,
    dir: Option<&std::path::Path>,
) -> PretrainConfig {
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(8).with_stages(2));
    let mut c = PretrainConfig::cifar(objective, backbone, epochs);
    c.head_width = 1.0 / 64.0;
    c.loader = LoaderConfig {
        batch_size: 8,
        shuffle: true,
        seed: 7,
        drop_last: true,
        workers: 2,
        prefetch: 0,
    };
    c.lr.base_lr = 0.05;
    c.lr.scale_with_batch = false;
    c.monitor.every_steps = 2;
    c.progress = false;
    c.output_dir = dir.map(|d| d.to_path_buf());
    c
}

fn plain_device() -> Device {
    Device::flex()
}

/// Runs and records the loss of every step.
fn run(
    config: &PretrainConfig,
    resume: Option<std::path::PathBuf>,
    stop_at: Option<usize>,
) -> (selfsup::Result<usize>, Vec<f64>) {
    let losses = Arc::new(Mutex::new(Vec::new()));
    let sink = losses.clone();
    let options = PretrainOptions {
        on_step: Some(Box::new(move |m| {
            sink.lock().unwrap().push(m.loss);
            if Some(m.step) == stop_at {
                Control::Stop
            } else {
                Control::Continue
            }
        })),
        resume,
        ..Default::default()
    };
    let result = pretrain_with(config, sample(), &plain_device(), options).map(|p| p.steps);
    let losses = losses.lock().unwrap().clone();
    (result, losses)
}

/// Every float tensor of a trained model (weights, running statistics, the method's state),
/// by path.
fn tensors_by_path(
    config: &PretrainConfig,
    resume: Option<std::path::PathBuf>,
) -> Vec<(String, Vec<f32>)> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Paths(Vec<String>, Vec<(String, Vec<f32>)>);
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .unwrap();
            self.1.push((self.0.join("."), values));
        }
    }
    let options = PretrainOptions {
        resume,
        ..Default::default()
    };
    let trained = pretrain_with(config, sample(), &plain_device(), options).unwrap();
    let mut paths = Paths(Vec::new(), Vec::new());
    trained.model.visit(&mut paths);
    paths.1
}

#[test]
fn a_resumed_run_ends_with_every_tensor_bit_for_bit_equal() {
    // BYOL: a target network with its own batch-norm statistics; DINO: a centre.
    for method in [
        AnyMethodConfig::byol(Preset::Cifar),
        AnyMethodConfig::dino(Preset::Cifar),
    ] {
        let full_dir = tempfile::tempdir().unwrap();
        let full = tensors_by_path(&tiny_config(method.clone(), 2, Some(full_dir.path())), None);
        // Killed in the second epoch (at its first step): the checkpoint holds the first.
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = run(
            &tiny_config(method.clone(), 2, Some(dir.path())),
            None,
            Some(2),
        );
        first.unwrap();
        let resumed = tensors_by_path(
            &tiny_config(method.clone(), 2, Some(dir.path())),
            Some(dir.path().join(CHECKPOINT_FILE)),
        );
        assert_eq!(full.len(), resumed.len());
        for ((path, a), (_, b)) in full.iter().zip(&resumed) {
            assert_eq!(a, b, "{}: {path} differs after resume", method.name());
        }
    }
}

#[test]
fn a_run_writes_metrics_and_a_checkpoint_and_reports_knn() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(AnyMethodConfig::simsiam(Preset::Cifar), 2, Some(dir.path()));
    let knn = KnnEvaluation {
        bank: sample(),
        queries: sample(),
        transform: ViewTransform::eval(None, 32),
        batch_size: 10,
    };
    let options = PretrainOptions {
        knn: Some(knn),
        ..Default::default()
    };
    let trained = pretrain_with(&config, sample(), &plain_device(), options).unwrap();
    assert_eq!(trained.steps, 4);
    assert_eq!(trained.history.len(), 2);
    let last = trained.history.last().unwrap();
    assert!(last.loss.is_finite());
    let top1 = last.knn_top1.unwrap();
    assert!((0.0..=1.0).contains(&top1));
    assert!(last.effective_rank.unwrap() >= 1.0);
    let lines = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.iter().filter(|r| r["kind"] == "step").count(), 4);
    assert_eq!(records.iter().filter(|r| r["kind"] == "epoch").count(), 2);
    assert!(records[0]["lr"].as_f64().unwrap() > 0.0);
    assert!(records[0]["effective_rank"].as_f64().is_some());
    let ckpt = Checkpoint::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(ckpt.meta.epochs_completed, 2);
    let err = load_backbone(
        dir.path().join(CHECKPOINT_FILE),
        Some(selfsup::model::BackboneBranch::Target),
        &plain_device(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("SimSiam keeps no momentum target"),
        "{err}"
    );
    assert_eq!(ckpt.meta.step, 4);
    // The backbone of the result encodes images.
    let features = trained.backbone();
    let _ = features;
}

#[test]
fn an_interrupted_and_resumed_run_gives_the_same_loss_curve() {
    let small_moco = AnyMethodConfig::Moco(MocoConfig {
        queue_length: 16,
        ..MocoConfig::preset(Preset::Cifar)
    });
    let small_deepcluster = AnyMethodConfig::DeepCluster(DeepClusterConfig {
        num_prototypes: vec![4, 3],
        ..DeepClusterConfig::preset(Preset::Cifar)
    });
    for objective in [
        AnyMethodConfig::byol(Preset::Cifar),
        AnyMethodConfig::swav(Preset::Cifar),
        small_moco,
        AnyMethodConfig::dino(Preset::Cifar),
        small_deepcluster,
        AnyMethodConfig::simclr(Preset::Cifar),
    ] {
        // SimCLR here also exercises AdamW's state, a weight-decay schedule and clipping.
        let config_in = |dir: &std::path::Path| {
            let mut c = tiny_config(objective.clone(), 3, Some(dir));
            if let AnyMethodConfig::SimClr(_) = objective {
                c.optimizer = OptimizerConfig::adamw(0.04)
                    .with_weight_decay_end(0.4)
                    .with_gradient_clip(0.5);
                c.lr.base_lr = 0.01;
            }
            c
        };
        let full_dir = tempfile::tempdir().unwrap();
        let (full, full_losses) = run(&config_in(full_dir.path()), None, None);
        assert_eq!(full.unwrap(), 6);
        // Interrupted during the third epoch: the checkpoint holds two epochs.
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let (first, first_losses) = run(&config, None, Some(4));
        assert_eq!(first.unwrap(), 5);
        assert_eq!(first_losses[..4], full_losses[..4], "{}", objective.name());
        let (second, second_losses) = run(&config, Some(dir.path().join(CHECKPOINT_FILE)), None);
        assert_eq!(second.unwrap(), 6);
        assert_eq!(second_losses, full_losses[4..], "{}", objective.name());
    }
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(AnyMethodConfig::byol(Preset::Cifar), 1, Some(dir.path()));
    pretrain(&config, sample(), &plain_device()).unwrap();
    let path = dir.path().join(CHECKPOINT_FILE);
    let before = std::fs::read(&path).unwrap();
    let mut exploding = tiny_config(AnyMethodConfig::byol(Preset::Cifar), 3, Some(dir.path()));
    exploding.lr.base_lr = 1e30;
    exploding.optimizer = OptimizerConfig::sgd(0.0);
    let (result, _) = run(&exploding, Some(path.clone()), None);
    let e = result.unwrap_err();
    assert!(matches!(e, Error::Step { epoch: 1, .. }), "{e}");
    assert!(e.to_string().contains("step"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    Checkpoint::read(&path).unwrap();
}

#[test]
fn an_interrupted_checkpoint_write_leaves_the_previous_one_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(AnyMethodConfig::simsiam(Preset::Cifar), 1, Some(dir.path()));
    pretrain(&config, sample(), &plain_device()).unwrap();
    let path = dir.path().join(CHECKPOINT_FILE);
    let good = Checkpoint::read(&path).unwrap();
    let mut newer = good.clone();
    newer.meta.epochs_completed = 99;
    let e = newer
        .write_atomic_failing_after(&path, Some(100))
        .unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    let after = Checkpoint::read(&path).unwrap();
    assert_eq!(after.meta.epochs_completed, 1);
    assert_eq!(after.model, good.model);
    // A torn file is detected, not loaded.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(dir.path().join("torn.ckpt"), &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::read(dir.path().join("torn.ckpt"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("torn.ckpt") && e.contains("truncated or corrupt"),
        "{e}"
    );
}

#[test]
fn bad_configurations_and_foreign_checkpoints_are_refused() {
    let mut c = tiny_config(AnyMethodConfig::byol(Preset::Cifar), 1, None);
    c.lr.base_lr = 0.0;
    let e = pretrain(&c, sample(), &plain_device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("lr.base_lr"), "{e}");
    let mut c = tiny_config(AnyMethodConfig::byol(Preset::Cifar), 1, None);
    c.epochs = 0;
    assert!(
        pretrain(&c, sample(), &plain_device())
            .unwrap_err()
            .to_string()
            .contains("epochs")
    );
    // A checkpoint of another architecture.
    let dir = tempfile::tempdir().unwrap();
    pretrain(
        &tiny_config(AnyMethodConfig::byol(Preset::Cifar), 1, Some(dir.path())),
        sample(),
        &plain_device(),
    )
    .unwrap();
    let mut wider = tiny_config(AnyMethodConfig::byol(Preset::Cifar), 2, None);
    wider.backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(16).with_stages(2));
    let (result, _) = run(&wider, Some(dir.path().join(CHECKPOINT_FILE)), None);
    let e = result.unwrap_err().to_string();
    assert!(e.contains("another architecture"), "{e}");
    let (result, _) = run(
        &tiny_config(AnyMethodConfig::simsiam(Preset::Cifar), 2, None),
        Some(dir.path().join(CHECKPOINT_FILE)),
        None,
    );
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("another architecture")
    );
}

#[test]
fn the_collapse_monitor_stops_a_run_when_asked() {
    let mut c = tiny_config(AnyMethodConfig::simsiam(Preset::Cifar), 1, None);
    c.monitor.min_effective_rank = 1e9;
    c.monitor.stop_on_collapse = true;
    let e = pretrain(&c, sample(), &plain_device()).unwrap_err();
    assert!(matches!(e, Error::TrainingStopped { step: 0, .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("possible collapse") && e.contains("effective rank"),
        "{e}"
    );
    // Without `stop_on_collapse` the same run only warns.
    c.monitor.stop_on_collapse = false;
    pretrain(&c, sample(), &plain_device()).unwrap();
}

#[test]
fn the_loop_follows_the_weight_decay_and_teacher_schedules_and_resumed_metrics_read_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(AnyMethodConfig::dino(Preset::Cifar), 2, Some(dir.path()));
    config.optimizer = OptimizerConfig::adamw(0.04)
        .with_weight_decay_end(0.4)
        .with_gradient_clip(3.0);
    config.lr.base_lr = 0.001;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let options = PretrainOptions {
        on_step: Some(Box::new(move |m| {
            sink.lock()
                .unwrap()
                .push((m.weight_decay, m.method_values["teacher_temperature"]));
            Control::Continue
        })),
        ..Default::default()
    };
    pretrain_with(&config, sample(), &plain_device(), options).unwrap();
    let seen = seen.lock().unwrap().clone();
    let schedule = selfsup::optim::CosineSchedule::new(0.04, 0.4, 4).unwrap();
    for (step, (wd, temperature)) in seen.iter().enumerate() {
        assert!(
            (wd - schedule.value(step)).abs() < 1e-12,
            "step {step}: {wd}"
        );
        // 30 warm-up epochs: 0.04 in epoch 0, 0.04 + 0.03 / 29 in epoch 1.
        let epoch = step / 2;
        let expected = 0.04 + 0.03 * epoch as f64 / 29.0;
        assert!(
            (temperature - expected).abs() < 1e-12,
            "step {step}: {temperature}"
        );
    }
    // A run killed in its second epoch left two step lines of it; the resumed run replaces
    // them, so the metrics read as one run.
    let metrics = dir.path().join(METRICS_FILE);
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"kind\":\"step\",\"epoch\":2,\"step\":4,\"loss\":1.0}\n{\"kind\":\"st");
    std::fs::write(&metrics, text).unwrap();
    let mut longer = config.clone();
    longer.epochs = 3;
    let options = PretrainOptions {
        resume: Some(dir.path().join(CHECKPOINT_FILE)),
        ..Default::default()
    };
    pretrain_with(&longer, sample(), &plain_device(), options).unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = records
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);
    let epochs: Vec<u64> = records
        .iter()
        .filter(|r| r["kind"] == "epoch")
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![0, 1, 2]);
}

#[test]
fn resuming_swav_with_another_number_of_global_crops_is_refused_with_both_counts() {
    let dir = tempfile::tempdir().unwrap();
    let swav = AnyMethodConfig::Swav(selfsup::method::SwavConfig {
        queue_length: 16,
        ..selfsup::method::SwavConfig::preset(Preset::Cifar)
    });
    let config = tiny_config(swav.clone(), 1, Some(dir.path()));
    pretrain(&config, sample(), &plain_device()).unwrap();
    // Three global crops: the queue has one slot per global crop.
    let mut more = tiny_config(swav, 2, Some(dir.path()));
    more.views.groups[0].count = 3;
    let (result, _) = run(&more, Some(dir.path().join(CHECKPOINT_FILE)), None);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("does not fit") && e.contains("queue") && e.contains('2') && e.contains('3'),
        "{e}"
    );
}

/// A 2-block ViT with 8-pixel patches on the 32-pixel sample (16 tokens, width 16).
fn tiny_vit() -> BackboneConfig {
    BackboneConfig::Vit(VitConfig::new(32, 8, 2, 2, 16, 32))
}

#[test]
fn vit_runs_of_dino_multi_crop_lejepa_mae_and_ijepa_resume_bit_for_bit() {
    let lejepa = AnyMethodConfig::lejepa(Preset::Cifar);
    let mae = AnyMethodConfig::Mae(MaeConfig {
        patch_size: 8,
        decoder_depth: 1,
        decoder_dim: 16,
        decoder_heads: 2,
        ..MaeConfig::preset(Preset::Cifar)
    });
    let ijepa = AnyMethodConfig::Ijepa(IjepaConfig {
        patch_size: 8,
        predictor_depth: 1,
        predictor_dim: 8,
        predictor_heads: 2,
    });
    let methods = [
        (AnyMethodConfig::dino(Preset::Cifar), 0),
        (lejepa, 2),
        (mae, 0),
        (ijepa, 0),
    ];
    for (method, local_crops) in methods {
        let config = |dir: &std::path::Path| {
            let mut c = tiny_config(method.clone(), 2, Some(dir));
            c.backbone = tiny_vit();
            c.optimizer = OptimizerConfig::adamw(0.05);
            c.lr.base_lr = 1e-3;
            // 16-pixel local crops: a 2 x 2 patch grid, the position embedding resized.
            let context = RecipeContext {
                preset: Preset::Cifar,
                local_crops: Some(local_crops),
            };
            c.views = method.recipe(&context).views;
            c
        };
        let full_dir = tempfile::tempdir().unwrap();
        let full = tensors_by_path(&config(full_dir.path()), None);
        let dir = tempfile::tempdir().unwrap();
        let (first, losses) = run(&config(dir.path()), None, Some(2));
        first.unwrap();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        let resumed = tensors_by_path(&config(dir.path()), Some(dir.path().join(CHECKPOINT_FILE)));
        assert_eq!(full.len(), resumed.len());
        let mut bad = Vec::new();
        for ((path, a), (_, b)) in full.iter().zip(&resumed) {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            if diff != 0.0 {
                bad.push(format!("{path}: {diff}"));
            }
        }
        assert!(bad.is_empty(), "{}: {bad:#?}", method.name());
    }
}

#[test]
fn the_knn_monitor_reads_the_target_encoder_when_asked() {
    use selfsup::model::BackboneBranch;
    use selfsup::train::knn_accuracy;
    let eval = KnnEvaluation {
        bank: sample(),
        queries: sample(),
        transform: ViewTransform::eval(None, 32),
        batch_size: 10,
    };
    let byol_dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(
        AnyMethodConfig::byol(Preset::Cifar),
        1,
        Some(byol_dir.path()),
    );
    config.eval_encoder = BackboneBranch::Target;
    // k = 5 tells the two backbones of this run apart (the online one scores lower).
    config.knn.k = 5;
    let options = PretrainOptions {
        knn: Some(eval.clone()),
        ..Default::default()
    };
    let trained = pretrain_with(&config, sample(), &plain_device(), options).unwrap();
    let monitored = trained.history.last().unwrap().knn_top1.unwrap();
    let device = plain_device();
    let target = trained.backbone_of(BackboneBranch::Target).unwrap();
    assert_eq!(
        monitored,
        knn_accuracy(&target, &eval, config.knn, &device).unwrap()
    );
    let online = trained.backbone_of(BackboneBranch::Online).unwrap();
    assert_ne!(
        monitored,
        knn_accuracy(&online, &eval, config.knn, &device).unwrap()
    );
    // From the checkpoint: the same target, every parameter trainable again (for fine-tuning;
    // the EMA copy was made without gradients).
    let (loaded, _) = load_backbone(
        byol_dir.path().join(CHECKPOINT_FILE),
        Some(BackboneBranch::Target),
        &device,
    )
    .unwrap();
    let (loaded_online, _) = load_backbone(
        byol_dir.path().join(CHECKPOINT_FILE),
        Some(BackboneBranch::Online),
        &device,
    )
    .unwrap();
    // Without a branch, the one the run evaluated: here the target.
    let (loaded_default, _) =
        load_backbone(byol_dir.path().join(CHECKPOINT_FILE), None, &device).unwrap();
    assert_eq!(
        common::collect(&loaded_default).values,
        common::collect(&loaded).values
    );
    assert_ne!(
        common::collect(&loaded_default).values,
        common::collect(&loaded_online).values
    );
    let trainable = common::collect(&loaded).trainable;
    assert!(trainable.iter().any(|t| *t));
    assert_eq!(trainable, common::collect(&loaded_online).trainable);
    assert_eq!(
        monitored,
        knn_accuracy(&loaded, &eval, config.knn, &device).unwrap()
    );
    // A method without a momentum target is refused before the first step.
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(AnyMethodConfig::simsiam(Preset::Cifar), 1, Some(dir.path()));
    config.eval_encoder = BackboneBranch::Target;
    let err = pretrain(&config, sample(), &plain_device()).unwrap_err();
    assert!(
        err.to_string().contains("SimSiam keeps no momentum target"),
        "{err}"
    );
    assert!(err.to_string().contains("eval_encoder"), "{err}");
    assert!(!dir.path().join(METRICS_FILE).exists());
}
