//! The communication of a data-parallel training step: run it alone (one process, the whole
//! global batch) and under `mpirun -np N` (each rank `global / N` images); rank 0 prints the
//! median step time, and per step the bytes this rank all-reduced (gradients, and the
//! gathered embeddings' gradients) and all-gathered (embeddings, indices), and the seconds
//! its MPI calls took, waiting for the other ranks included.
//!
//! ```text
//! benches/distributed.sh        # builds this, runs 1 process and 2 ranks, each shape
//! ```
//!
//! Environment: `SELFSUP_BENCH_BACKBONE` (`resnet18`, default, or `resnet50`), `SELFSUP_BENCH_WIDTH`
//! (first-stage channels, default 16), `SELFSUP_BENCH_BATCH` (the global batch, default 256),
//! `SELFSUP_BENCH_METHOD` (default `byol`), `SELFSUP_BENCH_STEPS` (timed steps after one
//! untimed, default 5), `SELFSUP_BENCH_SYNC_BN` (`1`: synchronised batch norm in the heads).

use std::time::Instant;

use burn::tensor::Distribution;
use selfsup::distributed::{self, Traffic, World};
use selfsup::method::{Progress, ScheduleValues, StepContext};
use selfsup::optim::{GroupedOptimizer, ParamGroups};
use selfsup::prelude::*;
use selfsup::step::train_step;
use selfsup::train::build_model;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> selfsup::Result<()> {
    let world = World::init()?;
    let outcome = run(world);
    distributed::finalize();
    outcome
}

fn run(world: World) -> selfsup::Result<()> {
    let width = env("SELFSUP_BENCH_WIDTH", 16);
    let global = env("SELFSUP_BENCH_BATCH", 256);
    let steps = env("SELFSUP_BENCH_STEPS", 5);
    let sync = env("SELFSUP_BENCH_SYNC_BN", 0) == 1;
    let backbone_name =
        std::env::var("SELFSUP_BENCH_BACKBONE").unwrap_or_else(|_| "resnet18".into());
    let method_name = std::env::var("SELFSUP_BENCH_METHOD").unwrap_or_else(|_| "byol".into());
    let local = world.shard().local_batch(global)?;
    let resnet = match backbone_name.as_str() {
        "resnet50" => ResNetConfig::resnet50(),
        _ => ResNetConfig::resnet18(),
    }
    .with_stem(Stem::Cifar)
    .with_width(width);
    let backbone = BackboneConfig::ResNet(resnet);
    let method = AnyMethodConfig::preset(&method_name, Preset::Cifar)?;
    let device = Device::flex().autodiff();
    selfsup::kernels::allocator::retain_freed_memory();
    // The same seed on every rank: the same initial model.
    device.seed(0);
    let config = PretrainConfig::cifar(method.clone(), backbone.clone(), 1);
    let mut model = build_model(&config, backbone.init(&device)?, global.max(3000), &device)?;
    model.method = model.method.start_epoch(0, 0)?;
    let mut optimizer = GroupedOptimizer::new(
        &OptimizerConfig::cifar_sgd(),
        &ParamGroups::rank_one_excluded(&model),
        0.06,
    )?;
    let ema = EmaSchedule::new(0.99, steps + 1)?;
    let indices: Vec<usize> = (world.rank() * local..(world.rank() + 1) * local).collect();
    device.seed(1 + world.rank() as u64);
    let views = [
        Tensor::<4>::random([local, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
        Tensor::<4>::random([local, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
    ];
    let _world = distributed::enter(world, sync);
    let (mut times, mut traffic) = (Vec::new(), Vec::new());
    for step in 0..=steps {
        world.barrier();
        let before = distributed::traffic();
        let start = Instant::now();
        let progress = Progress {
            step,
            epoch: 0,
            steps_per_epoch: steps + 1,
            epochs: 1,
        };
        let values = ScheduleValues::at(&progress, &model.method, 0.06, 5e-4, Some(ema.tau(step)));
        let context = StepContext {
            progress,
            values: &values,
            indices: &indices,
        };
        let (next, _) = train_step(model, &views, 2, &context, &mut optimizer)?;
        model = next;
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
            traffic.push(distributed::traffic() - before);
        }
    }
    if world.is_root() {
        report(
            &world,
            &method,
            &backbone_name,
            width,
            global,
            sync,
            times,
            &traffic,
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    world: &World,
    method: &AnyMethodConfig,
    backbone: &str,
    width: usize,
    global: usize,
    sync: bool,
    times: Vec<f64>,
    traffic: &[Traffic],
) {
    let step = median(times);
    let last = traffic.last().copied().unwrap_or_default();
    let mpi = median(traffic.iter().map(|t| t.seconds).collect());
    println!(
        "{} {backbone} width {width}, global batch {global}, {} rank(s) x {} images{}: median step \
         {step:.3} s ({:.1} images/s); per step and rank: all-reduce {:.2} MB, all-gather {:.1} KB, \
         MPI {mpi:.3} s ({:.1}% of the step)",
        method.name(),
        world.size(),
        global / world.size(),
        if sync { ", sync batch norm" } else { "" },
        global as f64 / step,
        last.all_reduce_bytes as f64 / 1e6,
        last.all_gather_bytes as f64 / 1e3,
        100.0 * mpi / step
    );
}
