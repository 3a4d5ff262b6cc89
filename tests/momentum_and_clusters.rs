//! MoCo, DINO and DeepCluster-v2 beyond their losses: the momentum targets get no gradient
//! and no optimiser update, DINO's teacher sees only the global crops and its last layer is
//! frozen during the first epoch, MoCo enqueues its keys, DeepCluster fills its memory bank
//! and clusters it with a seeded k-means.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use common::*;
use selfsup::energy::l2_normalize;
use selfsup::method::kmeans::spherical_kmeans;
use selfsup::method::{
    AnyMethod, AnyMethodConfig, DeepClusterConfig, Dino, DinoConfig, Method, MocoConfig, Preset,
    TargetViews,
};
use selfsup::prelude::Backbone;
use selfsup::step::SelfSupervised;

fn views(count: usize, size: usize, seed: u64, d: &Device) -> Vec<Tensor<4>> {
    (0..count)
        .map(|v| random::<4>([8, 3, size, size], seed + v as u64, d))
        .collect()
}

fn moco() -> AnyMethodConfig {
    AnyMethodConfig::Moco(MocoConfig {
        queue_length: 24,
        symmetric: false,
        ..MocoConfig::preset(Preset::Cifar)
    })
}

fn dino() -> AnyMethodConfig {
    AnyMethodConfig::Dino(DinoConfig {
        out_dim: 512,
        ..DinoConfig::preset(Preset::Cifar)
    })
}

#[test]
fn momentum_targets_get_no_gradient_and_no_optimiser_update() {
    let d = device();
    for method in [moco(), dino()] {
        let model = tiny_model(&method, &d);
        let target = model.embedding.target.as_ref().expect("a momentum target");
        assert!(collect(target).trainable.iter().all(|t| !t), "{method:?}");
        // tau = 1: the optimiser alone would have to move the target.
        let mut stepper = Stepper::sgd(&model, 0.5, 10, 1.0);
        let before = collect(target);
        let online_before = collect(&model.embedding.online);
        let (model, report) = stepper.step(model, &views(2, 8, 1, &d));
        assert_eq!(report.values.ema_momentum, Some(1.0));
        let after = collect(model.embedding.target.as_ref().unwrap());
        for (i, trainable) in collect(&model.embedding.online.backbone)
            .trainable
            .iter()
            .enumerate()
        {
            if *trainable {
                assert_eq!(before.values[i], after.values[i], "{method:?}: weight {i}");
            }
        }
        assert_ne!(
            online_before.values,
            collect(&model.embedding.online).values,
            "{method:?}: the online network did not learn"
        );
    }
}

#[test]
fn dino_teacher_sees_only_the_global_crops() {
    let d = device();
    let model = tiny_model(&dino(), &d);
    assert_eq!(
        model.method.requirements().target_views,
        TargetViews::Global
    );
    // Two 8-pixel global crops and two 6-pixel local crops.
    let mut crops = views(2, 8, 3, &d);
    crops.extend(views(2, 6, 9, &d));
    let embeddings = model
        .embedding
        .embed_views(&crops, 2, TargetViews::Global)
        .unwrap();
    assert_eq!(embeddings.projections.len(), 4);
    assert_eq!(embeddings.targets.len(), 2);
    // The teacher's outputs are those of the global crops.
    let teacher = model.embedding.target.as_ref().unwrap();
    for (v, target) in embeddings.targets.iter().enumerate() {
        let expected = teacher.project(crops[v].clone()).unwrap();
        assert_close("teacher output", &values(target), &values(&expected));
    }
    // A multi-crop step trains.
    let mut stepper = Stepper::sgd(&model, 0.1, 10, 0.996);
    let values_now = stepper.values(&model);
    let indices: Vec<usize> = (0..8).collect();
    let context = selfsup::method::StepContext {
        progress: stepper.progress(),
        values: &values_now,
        indices: &indices,
    };
    let (_, report) =
        selfsup::step::train_step(model, &crops, 2, &context, &mut stepper.optimizer).unwrap();
    assert!(report.loss.is_finite());
}

fn last_layer(model: &SelfSupervised<Backbone>) -> Vec<f64> {
    values(
        &model
            .embedding
            .online
            .projector
            .blocks
            .last()
            .unwrap()
            .linear
            .weight
            .val(),
    )
}

#[test]
fn dino_freezes_its_last_layer_during_the_first_epoch() {
    let d = device();
    let model = tiny_model(&dino(), &d);
    let mut stepper = Stepper::sgd(&model, 0.5, 10, 0.996);
    let first_hidden = |m: &SelfSupervised<Backbone>| {
        values(&m.embedding.online.projector.blocks[0].linear.weight.val())
    };
    let (last0, hidden0) = (last_layer(&model), first_hidden(&model));
    let (model, _) = stepper.step(model, &views(2, 8, 1, &d));
    assert_eq!(last_layer(&model), last0, "the last layer moved in epoch 0");
    assert_ne!(first_hidden(&model), hidden0, "the head did not learn");
    stepper.epoch = 1;
    let (model, _) = stepper.step(model, &views(2, 8, 1, &d));
    assert_ne!(
        last_layer(&model),
        last0,
        "the last layer stayed frozen in epoch 1"
    );
}

#[test]
fn dino_teacher_temperature_warms_up_per_epoch_and_the_centre_moves() {
    let config = DinoConfig {
        warmup_teacher_temperature_epochs: 3,
        ..DinoConfig::preset(Preset::Cifar)
    };
    let d = device();
    let setup = selfsup::method::MethodSetup {
        embedding_dim: 4,
        num_views: 2,
        num_global: 2,
        feature_dim: 8,
        dataset_len: 8,
        seed: 0,
    };
    let module: Dino = selfsup::method::MethodConfig::init(&config, &setup, &d).unwrap();
    let at: Vec<f64> = (0..5).map(|e| module.teacher_temperature_at(e)).collect();
    let expected = [0.04, 0.055, 0.07, 0.07, 0.07];
    assert_close_tol("teacher temperature", &at, &expected, 1e-12, 0.0);
    // The centre is a buffer: zero at first, moved by a step.
    let model = tiny_model(&dino(), &d);
    let centre = |m: &SelfSupervised<Backbone>| match &m.method {
        AnyMethod::Dino(dino) => values(&dino.center.val()),
        _ => panic!("DINO expected"),
    };
    assert!(centre(&model).iter().all(|c| *c == 0.0));
    let mut stepper = Stepper::sgd(&model, 0.1, 10, 0.996);
    let (model, _) = stepper.step(model, &views(2, 8, 1, &d));
    assert!(centre(&model).iter().any(|c| *c != 0.0));
}

#[test]
fn moco_enqueues_the_normalised_keys_of_its_step() {
    let d = device();
    let model = tiny_model(&moco(), &d);
    let crops = views(2, 8, 5, &d);
    let keys = l2_normalize(
        model
            .embedding
            .target
            .as_ref()
            .unwrap()
            .project(crops[1].clone())
            .unwrap(),
    );
    let mut stepper = Stepper::sgd(&model, 0.1, 10, 0.99);
    let (model, _) = stepper.step(model, &crops);
    let AnyMethod::Moco(moco) = &model.method else {
        panic!("MoCo expected")
    };
    let queue = moco.queue.slot(0).unwrap();
    assert_close(
        "newest keys",
        &values(&queue.clone().narrow(0, 0, 8)),
        &values(&keys),
    );
    assert_eq!(queue.dims(), [24, keys.dims()[1]]);
}

/// `per_centre` noisy unit points around each of `centres` unit vectors.
fn clustered_points(centres: &Tensor<2>, per_centre: usize, d: &Device) -> Tensor<2> {
    let [k, dim] = centres.dims();
    let repeated = centres
        .clone()
        .reshape([k, 1, dim])
        .repeat_dim(1, per_centre)
        .reshape([k * per_centre, dim]);
    // Seeded here rather than by the device's generator, which the tests running beside this
    // one draw from too (the points then changed from run to run).
    let noise = random([k * per_centre, dim], 12, d).mul_scalar(0.08);
    l2_normalize(repeated + noise)
}

#[test]
fn kmeans_finds_known_centres_and_repeats_itself_from_a_seed() {
    let d = Device::flex();
    let centres = l2_normalize(random([4, 16], 11, &d));
    let points = clustered_points(&centres, 40, &d);
    let first = spherical_kmeans(&points, 4, 10, 7).unwrap();
    let again = spherical_kmeans(&points, 4, 10, 7).unwrap();
    assert_eq!(first.assignments, again.assignments);
    assert_eq!(values(&first.centroids), values(&again.centroids));
    // Each found centroid is one of the true centres, and each true cluster is one cluster.
    let similarity = values(&first.centroids.clone().matmul(centres.transpose()));
    for row in similarity.chunks(4) {
        let best = row.iter().copied().fold(f64::MIN, f64::max);
        assert!(best > 0.99, "a centroid far from every centre: {row:?}");
    }
    for c in 0..4 {
        let cluster = &first.assignments[c * 40..(c + 1) * 40];
        assert!(
            cluster.iter().all(|&a| a == cluster[0]),
            "cluster {c} split"
        );
    }
    let mut labels: Vec<usize> = (0..4).map(|c| first.assignments[c * 40]).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), 4, "two centres merged");
    assert!(spherical_kmeans(&points, 0, 10, 7).is_err());
    assert!(spherical_kmeans(&points, 161, 10, 7).is_err());
}

#[test]
fn deepcluster_fills_its_bank_and_clusters_every_image() {
    let d = device();
    let config = AnyMethodConfig::DeepCluster(DeepClusterConfig {
        num_prototypes: vec![4, 5, 3],
        ..DeepClusterConfig::preset(Preset::Cifar)
    });
    let model = tiny_model(&config, &d);
    let model = SelfSupervised {
        method: model.method.start_epoch(0, 3).unwrap(),
        ..model
    };
    let AnyMethod::DeepCluster(dc) = &model.method else {
        panic!("DeepCluster expected")
    };
    assert_eq!(dc.assignments.len(), 3);
    assert!(dc.assignments.iter().all(|a| a.len() == TINY_DATASET));
    assert!(dc.assignments[1].iter().all(|&c| c < 5));
    assert_eq!(dc.banks.len(), 2);
    let crops = views(2, 8, 7, &d);
    let projections: Vec<Tensor<2>> = crops
        .iter()
        .map(|v| l2_normalize(model.embedding.embed(v.clone()).unwrap()))
        .collect();
    let mut stepper = Stepper::sgd(&model, 1e-9, 10, 0.99);
    let (model, _) = stepper.step(model, &crops);
    let AnyMethod::DeepCluster(dc) = &model.method else {
        panic!("DeepCluster expected")
    };
    for (g, z) in projections.iter().enumerate() {
        let rows = dc.banks[g].val().narrow(0, 0, 8);
        assert_close_tol("bank rows", &values(&rows), &values(z), 1e-4, 1e-3);
    }
    // The prototypes are centroids: no gradient, unit rows.
    for p in &dc.prototypes {
        assert!(!p.is_require_grad());
        let norms = values(&p.val().square().sum_dim(1).sqrt());
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
    }
}

/// Every parameter of every method's online network learns (running statistics aside): a
/// head initialised by hand once lost its biases' gradients.
#[test]
fn every_online_parameter_is_trainable() {
    struct Paths {
        path: Vec<String>,
        frozen: Vec<String>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            if !param.is_require_grad() && !path.contains("running_") {
                self.frozen.push(path);
            }
        }
    }
    let d = device();
    for name in AnyMethodConfig::NAMES {
        let method = match AnyMethodConfig::preset(name, Preset::Cifar).unwrap() {
            AnyMethodConfig::DeepCluster(c) => AnyMethodConfig::DeepCluster(DeepClusterConfig {
                num_prototypes: vec![4],
                ..c
            }),
            other => other,
        };
        let model = tiny_model(&method, &d);
        let mut paths = Paths {
            path: Vec::new(),
            frozen: Vec::new(),
        };
        model.embedding.online.visit(&mut paths);
        assert!(paths.frozen.is_empty(), "{name}: {:?}", paths.frozen);
    }
}
