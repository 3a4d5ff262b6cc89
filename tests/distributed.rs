//! Data-parallel training. Without MPI: each rank's shard of the global batches, and the
//! error of a build without MPI launched as one of several ranks. With the `mpi` feature: two
//! ranks under `mpirun -np 2` against one process (the tests start `mpirun` on this test
//! binary, which runs the `rank_*` tests on each rank).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use image::RgbImage;
use selfsup::augment::ViewTransform;
use selfsup::data::{ImageDataset, InMemoryDataset, LoaderConfig, ViewLoader};
use selfsup::distributed::Shard;
use selfsup::method::Preset;
use selfsup::prelude::Device;

/// `n` random 32 x 32 images from `seed`.
fn random_images(n: usize, seed: u64) -> Vec<RgbImage> {
    (0..n)
        .map(|i| {
            let values = common::random_values(32 * 32 * 3, seed + i as u64);
            let bytes = values
                .iter()
                .map(|v| (v.abs() * 90.0).min(255.0) as u8)
                .collect();
            RgbImage::from_raw(32, 32, bytes).unwrap()
        })
        .collect()
}

fn dataset(n: usize) -> Arc<dyn ImageDataset> {
    Arc::new(InMemoryDataset::unlabeled(random_images(n, 11)).unwrap())
}

fn loader(batch_size: usize, shard: Shard, transform: ViewTransform) -> ViewLoader {
    let config = LoaderConfig {
        batch_size,
        shuffle: true,
        seed: 5,
        drop_last: true,
        workers: 2,
        prefetch: 0,
    };
    ViewLoader::new(dataset(29), transform, config, &Device::flex())
        .unwrap()
        .with_shard(shard)
        .unwrap()
}

#[test]
fn shards_are_disjoint_cover_every_batch_and_hold_what_one_process_sees() {
    let transform = ViewTransform::byol(Preset::Cifar.scale());
    let whole = loader(6, Shard::default(), transform.clone());
    let ranks: Vec<ViewLoader> = (0..3)
        .map(|rank| loader(6, Shard { rank, size: 3 }, transform.clone()))
        .collect();
    for epoch in 0..2 {
        let mut one: Vec<_> = (0..whole.batches_per_epoch())
            .map(|_| None)
            .collect::<Vec<Option<selfsup::data::HostBatch>>>();
        let mut batches = whole.epoch(epoch);
        for slot in one.iter_mut() {
            *slot = Some(batches.next_host().unwrap().unwrap());
        }
        let mut shards: Vec<Vec<selfsup::data::HostBatch>> = Vec::new();
        for rank in &ranks {
            let mut it = rank.epoch(epoch);
            let mut list = Vec::new();
            while let Some(b) = it.next_host() {
                list.push(b.unwrap());
            }
            assert_eq!(list.len(), whole.batches_per_epoch());
            shards.push(list);
        }
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        for (k, single) in one.iter().enumerate() {
            let single = single.as_ref().unwrap();
            let mut indices: Vec<usize> = Vec::new();
            let mut views: Vec<Vec<f32>> = vec![Vec::new(); single.views.len()];
            for shard in &shards {
                let part = &shard[k];
                assert_eq!(part.len(), 2, "each of 3 ranks takes 2 of 6 images");
                indices.extend(&part.indices);
                for (v, values) in part.views.iter().enumerate() {
                    views[v].extend(values);
                }
            }
            assert_eq!(
                indices, single.indices,
                "epoch {epoch} batch {k}: rank order"
            );
            assert_eq!(
                views, single.views,
                "epoch {epoch} batch {k}: the same views"
            );
            for i in indices {
                assert!(seen.insert(i), "image {i} in two shards of epoch {epoch}");
            }
        }
        assert_eq!(seen.len(), 6 * whole.batches_per_epoch());
    }
    // The same seed gives the same shards.
    let again = loader(6, Shard { rank: 1, size: 3 }, transform);
    let first = ranks[1].epoch(1).next_host().unwrap().unwrap();
    assert_eq!(again.epoch(1).next_host().unwrap().unwrap(), first);
}

#[test]
fn a_shard_of_masked_batches_gets_one_process_rows_of_the_masks() {
    use selfsup::augment::Masking;
    let transform = ViewTransform::masked_image(Preset::Cifar.scale(), (0.3, 1.0))
        .with_masking(Masking::mae(4));
    let whole = loader(4, Shard::default(), transform.clone());
    let single = whole.epoch(0).next_host().unwrap().unwrap();
    let single = single.masks.unwrap();
    for rank in 0..2 {
        let part = loader(4, Shard { rank, size: 2 }, transform.clone());
        let masks = part.epoch(0).next_host().unwrap().unwrap().masks.unwrap();
        assert_eq!(masks, single.rows(2 * rank, 2), "rank {rank}");
    }
}

#[test]
fn a_batch_the_ranks_cannot_share_evenly_is_refused() {
    let config = LoaderConfig {
        batch_size: 8,
        ..LoaderConfig::default()
    };
    let loader = ViewLoader::new(
        dataset(16),
        ViewTransform::byol(Preset::Cifar.scale()),
        config,
        &Device::flex(),
    )
    .unwrap();
    let err = loader
        .with_shard(Shard { rank: 0, size: 3 })
        .err()
        .expect("8 images over 3 ranks");
    let text = err.to_string();
    assert!(
        text.contains("batch_size") && text.contains("3 ranks"),
        "{text}"
    );
}

/// Launched as one of several ranks, a build without MPI says so instead of training alone.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_launched_as_a_rank_names_the_feature() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["pretrain", "--data", "/nonexistent", "--epochs", "1"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("OMPI_COMM_WORLD_SIZE=2") && text.contains("--features mpi"),
        "{text}"
    );
}

#[cfg(feature = "mpi")]
mod mpi {
    //! Each `#[test]` here starts `mpirun -np 2` on this binary, running one of the ignored
    //! `rank_*` tests on every rank, and checks how the job ended.

    use std::collections::HashSet;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use image::RgbImage;
    use selfsup::backbone::{BackboneConfig, VitConfig};
    use selfsup::data::{ImageDataset, InMemoryDataset, LoaderConfig, ViewLoader};
    use selfsup::distributed::{self, World};
    use selfsup::method::{AnyMethodConfig, MethodConfig, Preset};
    use selfsup::prelude::Device;
    use selfsup::train::{PretrainConfig, PretrainOptions, pretrain_with};
    use selfsup::{Error, Result};

    use super::common;

    /// Runs the ignored test `name` on 2 ranks; its output, and whether it hung past `limit`.
    fn on_two_ranks(name: &str, limit: Duration) -> (bool, String) {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("mpirun")
            .args(["-np", "2", "--oversubscribe", "--bind-to", "none"])
            .arg(exe)
            .args([
                "--ignored",
                "--exact",
                name,
                "--test-threads=1",
                "--nocapture",
            ])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("SELFSUP_RANK_TEST", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpirun (Open MPI) on the PATH");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                child.kill().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match status {
            Some(status) => (status.success(), text),
            None => panic!("`{name}` on 2 ranks did not end within {limit:?}:\n{text}"),
        }
    }

    /// The world of a `rank_*` test: two ranks under mpirun.
    fn two_ranks() -> World {
        assert!(
            std::env::var("SELFSUP_RANK_TEST").is_ok(),
            "run by the mpirun tests of this file, not on its own"
        );
        let world = World::init().unwrap();
        assert_eq!(world.size(), 2, "started by `mpirun -np 2`");
        world
    }

    #[test]
    fn two_ranks_train_like_one_process_with_twice_the_batch() {
        let (ok, text) = on_two_ranks(
            "mpi::rank_trains_like_one_process",
            Duration::from_secs(600),
        );
        assert!(ok, "{text}");
        assert_eq!(text.matches("matches one process").count(), 2 * 5, "{text}");
    }

    #[test]
    fn the_gather_hands_each_rank_the_one_process_gradient_of_its_rows() {
        let (ok, text) = on_two_ranks("mpi::rank_gather_gradient", Duration::from_secs(120));
        assert!(ok, "{text}");
        assert_eq!(text.matches("gather gradient matches").count(), 2, "{text}");
    }

    #[test]
    fn a_rank_that_fails_mid_epoch_ends_every_rank_with_its_error() {
        let started = Instant::now();
        let (ok, text) = on_two_ranks("mpi::rank_fails_mid_epoch", Duration::from_secs(180));
        assert!(!ok, "the job must fail:\n{text}");
        assert!(text.contains("error on rank 1 of 2"), "{text}");
        assert!(text.contains("injected on purpose"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(180));
    }

    #[test]
    fn a_checkpoint_of_two_ranks_resumes_in_one_process_like_an_unbroken_run() {
        let (ok, text) = on_two_ranks(
            "mpi::rank_checkpoint_resumes_on_one_rank",
            Duration::from_secs(300),
        );
        assert!(ok, "{text}");
        assert!(text.contains("resumed on one process matches"), "{text}");
    }

    fn tiny_vit() -> BackboneConfig {
        BackboneConfig::Vit(VitConfig::new(32, 8, 2, 2, 16, 32))
    }

    /// 48 images, a global batch of 16 (8 per rank): 3 optimiser steps in the epoch.
    fn config(method: AnyMethodConfig) -> PretrainConfig {
        let mut c = PretrainConfig::cifar(method, tiny_vit(), 1);
        c.head_width = 1.0 / 64.0;
        c.loader = LoaderConfig {
            batch_size: 16,
            shuffle: true,
            seed: 3,
            drop_last: true,
            workers: 1,
            prefetch: 0,
        };
        c.lr.base_lr = 0.01;
        c.lr.scale_with_batch = false;
        c.monitor.every_steps = 0;
        c.progress = false;
        c.distributed.sync_batch_norm = true;
        c.distributed.check_every_steps = 1;
        c
    }

    fn images() -> Arc<dyn ImageDataset> {
        Arc::new(InMemoryDataset::unlabeled(super::random_images(48, 23)).unwrap())
    }

    /// Losses of every step and the trainable parameters after the run.
    fn train(config: &PretrainConfig, world: World) -> (Vec<f64>, Vec<f64>) {
        let losses = Arc::new(Mutex::new(Vec::new()));
        let sink = losses.clone();
        let options = PretrainOptions {
            on_step: Some(Box::new(move |m| {
                sink.lock().unwrap().push(m.loss);
                selfsup::train::Control::Continue
            })),
            world,
            ..Default::default()
        };
        let trained = pretrain_with(config, images(), &Device::flex(), options).unwrap();
        let losses = losses.lock().unwrap().clone();
        (losses, trainable_values(&trained.model))
    }

    fn trainable_values<M: Module>(module: &M) -> Vec<f64> {
        struct Values(Vec<f64>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if param.is_require_grad() {
                    self.0.extend(common::values(&param.val()));
                }
            }
        }
        let mut v = Values(Vec::new());
        module.visit(&mut v);
        v.0
    }

    #[test]
    #[ignore = "runs on each rank under mpirun; see two_ranks_train_like_one_process_with_twice_the_batch"]
    fn rank_trains_like_one_process() {
        let world = two_ranks();
        for method in [
            AnyMethodConfig::byol(Preset::Cifar),
            AnyMethodConfig::barlow_twins(Preset::Cifar),
            AnyMethodConfig::vicreg(Preset::Cifar),
            AnyMethodConfig::swav(Preset::Cifar),
            AnyMethodConfig::simclr(Preset::Cifar),
        ] {
            let name = method.name();
            let c = config(method);
            let (one_losses, one_params) = train(&c, World::single());
            let (losses, params) = train(&c, world);
            assert_eq!(losses.len(), 3, "{name}: 3 steps");
            common::assert_close_tol(&format!("{name} losses"), &losses, &one_losses, 0.0, 1e-4);
            let drift = relative_distance(&params, &one_params);
            assert!(
                drift <= 1e-4,
                "{name}: parameters at relative distance {drift:e} from one process's"
            );
            println!(
                "{name}: rank {} matches one process (parameters at relative distance {drift:.1e})",
                world.rank()
            );
        }
        distributed::finalize();
    }

    #[test]
    #[ignore = "runs on each rank under mpirun; see a_checkpoint_of_two_ranks_resumes_in_one_process_like_an_unbroken_run"]
    fn rank_checkpoint_resumes_on_one_rank() {
        let world = two_ranks();
        // One folder for both ranks (rank 0 writes it): named after the job's parent process.
        let dir = std::env::temp_dir().join(format!(
            "selfsup-rank-resume-{}",
            std::os::unix::process::parent_id()
        ));
        let mut c = config(AnyMethodConfig::simclr(Preset::Cifar));
        c.epochs = 2;
        c.output_dir = Some(dir.clone());
        // Two ranks train the first epoch and stop at the second's first step.
        let options = PretrainOptions {
            on_step: Some(Box::new(|m| {
                if m.epoch == 1 {
                    selfsup::train::Control::Stop
                } else {
                    selfsup::train::Control::Continue
                }
            })),
            world,
            ..Default::default()
        };
        pretrain_with(&c, images(), &Device::flex(), options).unwrap();
        world.barrier();
        if world.is_root() {
            let checkpoint = dir.join(selfsup::train::CHECKPOINT_FILE);
            let resumed = PretrainOptions {
                resume: Some(checkpoint),
                ..Default::default()
            };
            let trained = pretrain_with(&c, images(), &Device::flex(), resumed).unwrap();
            assert_eq!(trained.steps, 6);
            let mut unbroken = c.clone();
            unbroken.output_dir = None;
            let (_, expected) = train(&unbroken, World::single());
            let drift = relative_distance(&trainable_values(&trained.model), &expected);
            assert!(drift <= 1e-4, "relative distance {drift:e}");
            println!("resumed on one process matches (relative distance {drift:.1e})");
            let _ = std::fs::remove_dir_all(&dir);
        }
        world.barrier();
        distributed::finalize();
    }

    /// `|a - b| / |b|` of two parameter vectors (Euclidean norms): elementwise, rounding
    /// differences on parameters near zero would dominate (Barlow Twins' loss on 16 images
    /// amplifies them: two single-process runs, with burn's batch norm and with the fused
    /// kernel, already differ by a quarter of an elementwise 1e-4 after 3 steps).
    fn relative_distance(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let norm: f64 = b.iter().map(|y| y * y).sum();
        (diff / norm).sqrt()
    }

    /// `mean_ij (g_i . g_j)^2 + sum tanh(g)` of the gathered rows: every row's gradient
    /// depends on every other row.
    fn mixing_loss(g: Tensor<2>) -> Tensor<1> {
        let gram = g.clone().matmul(g.clone().transpose());
        (gram.clone() * gram).mean() + g.tanh().sum()
    }

    #[test]
    #[ignore = "runs on each rank under mpirun; see the_gather_hands_each_rank_the_one_process_gradient_of_its_rows"]
    fn rank_gather_gradient() {
        let world = two_ranks();
        let all = common::random::<2>([8, 5], 41, &Device::flex());
        let rows = world.shard().rows(4);
        let own = all.clone().slice([rows.clone()]).autodiff().require_grad();
        let gradient = {
            let _world = distributed::enter(world, false);
            let gathered = distributed::gather_rows(own.clone()).unwrap();
            assert_eq!(gathered.dims(), [8, 5]);
            // As the training step does: each rank backpropagates its share, loss / ranks.
            let grads = mixing_loss(gathered).div_scalar(2.0).backward();
            own.grad(&grads).unwrap()
        };
        let whole = all.autodiff().require_grad();
        let grads = mixing_loss(whole.clone()).backward();
        let expected = whole.grad(&grads).unwrap().slice([rows]);
        common::assert_close(
            "gradient of this rank's rows",
            &common::values(&gradient),
            &common::values(&expected),
        );
        println!("rank {}: gather gradient matches", world.rank());
        distributed::finalize();
    }

    /// Images that fail to load on one rank at the indices of its second batch.
    struct Faulty {
        inner: InMemoryDataset,
        broken: HashSet<usize>,
    }

    impl ImageDataset for Faulty {
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
            if self.broken.contains(&index) {
                return Err(Error::InvalidDataset {
                    path: format!("image {index}"),
                    reason: "unreadable (injected on purpose)".into(),
                });
            }
            self.inner.image(index)
        }
        fn label(&self, index: usize) -> Option<usize> {
            self.inner.label(index)
        }
        fn classes(&self) -> &[String] {
            self.inner.classes()
        }
        fn source_name(&self, index: usize) -> String {
            self.inner.source_name(index)
        }
    }

    #[test]
    #[ignore = "runs on each rank under mpirun; see a_rank_that_fails_mid_epoch_ends_every_rank_with_its_error"]
    fn rank_fails_mid_epoch() {
        let world = two_ranks();
        let c = config(AnyMethodConfig::simclr(Preset::Cifar));
        let inner = InMemoryDataset::unlabeled(super::random_images(48, 23)).unwrap();
        let broken = if world.rank() == 1 {
            let probe = ViewLoader::new(
                Arc::new(inner.clone()),
                c.views.clone(),
                c.loader.clone(),
                &Device::flex(),
            )
            .unwrap();
            let order = probe.order(0);
            order[world.shard().positions(1, 16)]
                .iter()
                .copied()
                .collect()
        } else {
            HashSet::new()
        };
        let data: Arc<dyn ImageDataset> = Arc::new(Faulty { inner, broken });
        let options = PretrainOptions {
            world,
            ..Default::default()
        };
        // Rank 1 aborts the job at its second batch; rank 0 is ended by it.
        let _ = pretrain_with(&c, data, &Device::flex(), options);
        unreachable!("rank {} finished a run that must fail", world.rank());
    }
}
