//! Convolution throughput per layer shape: this crate's fast CPU kernels against burn's flex
//! convolution, both called the way a model calls them (a `Conv2d` module through
//! `selfsup::conv::conv2d`, forward on the flex device, forward + backward on the flex
//! autodiff device).
//!
//! ```text
//! cargo bench --bench conv                       # all shapes of benches/conv_shapes.csv
//! SELFSUP_BENCH_SHAPES=issue,r18 cargo bench --bench conv
//! benches/conv.sh                                # with PyTorch side by side
//! ```
//!
//! Environment: `SELFSUP_BENCH_BATCH` (default 128), `SELFSUP_BENCH_REPS` (timed repetitions,
//! median reported, default 5; one untimed warm-up first), `SELFSUP_BENCH_SHAPES` (name
//! prefixes, comma-separated, or exact names ending in `$`; default all), `SELFSUP_BENCH_IMPLS` (`selfsup`: the fast kernels
//! with the algorithm measured per shape; `im2col`, `im2col-l2`, `winograd`, `winograd-4x4`, `direct`, `direct-channels`: the fast kernels with
//! that algorithm fixed where it applies; `flex`: burn's; default `selfsup,flex`). Prints one
//! CSV row per shape and implementation: `impl,name,fwd_gflops,fwdbwd_gflops` (fwd+bwd counts
//! 3x the forward FLOPs). `SELFSUP_BENCH_PASSES=1` also times each pass of the fast kernels
//! alone on plain slices and prints `passes,impl,name,forward_ms,input_grad_ms,weight_grad_ms`
//! to stderr (for profiling which pass a layer's time goes to). `SELFSUP_BENCH_MALLOC=default`
//! leaves glibc's allocator settings alone instead of keeping freed memory as training does.

mod common;

use common::{median_ms, repetitions};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tensor};
use selfsup::conv::{
    ConvAlgorithm, ConvGeometry, conv2d, conv2d_forward, conv2d_input_grad, conv2d_weight_grad,
    set_conv_algorithm, set_fast_conv, uses_fast_kernels,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Milliseconds of each pass of `g` on the fast kernels (the algorithm as currently fixed or
/// measured): forward, input gradient, weight gradient.
fn pass_millis(g: &ConvGeometry, reps: usize) -> [f64; 3] {
    let values = |len: usize, phase: f32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32) * 0.618 + phase).sin())
            .collect()
    };
    let (x, w, dy) = (
        values(g.input_len(), 0.1),
        values(g.weight_len(), 0.2),
        values(g.output_len(), 0.3),
    );
    let (mut y, mut dx, mut dw) = (
        vec![0.0; g.output_len()],
        vec![0.0; g.input_len()],
        vec![0.0; g.weight_len()],
    );
    [
        seconds(reps, || conv2d_forward(g, &x, &w, &mut y)),
        seconds(reps, || conv2d_input_grad(g, &dy, &w, &mut dx)),
        seconds(reps, || conv2d_weight_grad(g, &x, &dy, &mut dw)),
    ]
    .map(|s| s * 1e3)
}

fn main() {
    // As `pretrain` does on the CPU, so the layer calls reuse freed memory instead of faulting
    // in fresh pages every call (`SELFSUP_BENCH_MALLOC=default` keeps glibc's defaults).
    if std::env::var("SELFSUP_BENCH_MALLOC").as_deref() != Ok("default") {
        selfsup::kernels::allocator::retain_freed_memory();
    }
    let passes = std::env::var("SELFSUP_BENCH_PASSES").is_ok_and(|v| v == "1");
    let batch = env("SELFSUP_BENCH_BATCH", 128);
    let reps = repetitions(5);
    let filter: Vec<String> = std::env::var("SELFSUP_BENCH_SHAPES")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let impls: Vec<String> = std::env::var("SELFSUP_BENCH_IMPLS")
        .unwrap_or_else(|_| "selfsup,flex".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let shapes = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/conv_shapes.csv"
    ))
    .expect("benches/conv_shapes.csv");
    eprintln!(
        "conv bench: batch {batch}, median of {reps}, {} CPU threads",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("impl,name,fwd_gflops,fwdbwd_gflops");
    for line in shapes
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let name = fields[0];
        let wanted = |f: &String| match f.strip_suffix('$') {
            Some(exact) => name == exact,
            None => name.starts_with(f.as_str()),
        };
        if !filter.is_empty() && !filter.iter().any(wanted) {
            continue;
        }
        let n: Vec<usize> = fields[1..]
            .iter()
            .map(|f| f.trim().parse().expect("shape field"))
            .collect();
        let (cin, h, w, cout, k, stride, pad) = (n[0], n[1], n[2], n[3], n[4], n[5], n[6]);
        let geometry = ConvGeometry {
            batch,
            in_channels: cin,
            in_height: h,
            in_width: w,
            out_channels: cout,
            kernel_height: k,
            kernel_width: k,
            stride: [stride, stride],
            padding: [pad, pad],
        };
        let gflop = geometry.forward_flops() / 1e9;
        let variants = [
            ("selfsup", true, None),
            ("im2col", true, Some(ConvAlgorithm::Im2col)),
            ("im2col-l2", true, Some(ConvAlgorithm::Im2colL2)),
            ("winograd", true, Some(ConvAlgorithm::Winograd)),
            ("winograd-4x4", true, Some(ConvAlgorithm::Winograd4x4)),
            ("direct", true, Some(ConvAlgorithm::Direct)),
            ("direct-channels", true, Some(ConvAlgorithm::DirectChannels)),
            ("flex", false, None),
        ];
        for (label, fast, algorithm) in variants {
            if !impls.iter().any(|i| i == label) {
                continue;
            }
            set_fast_conv(fast);
            set_conv_algorithm(algorithm);
            let device = Device::flex();
            device.seed(1);
            let config = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false);
            let conv = config.init(&device);
            let x =
                Tensor::<4>::random([batch, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
            assert_eq!(uses_fast_kernels(&conv, &x), fast);
            let forward = seconds(reps, || {
                let y = conv2d(&conv, x.clone());
                std::hint::black_box(y);
            });
            let ad = device.clone().autodiff();
            let conv = config.init(&ad);
            let x = Tensor::<4>::random([batch, cin, h, w], Distribution::Normal(0.0, 1.0), &ad)
                .require_grad();
            let both = seconds(reps, || {
                let grads = conv2d(&conv, x.clone()).sum().backward();
                std::hint::black_box(grads);
            });
            println!(
                "{label},{name},{:.1},{:.1}",
                gflop / forward,
                3.0 * gflop / both
            );
            if passes && fast {
                let [forward, input, weight] = pass_millis(&geometry, reps);
                eprintln!("passes,{label},{name},{forward:.2},{input:.2},{weight:.2}");
            }
        }
    }
    set_fast_conv(true);
    set_conv_algorithm(None);
}

/// [`median_ms`] in seconds.
fn seconds(reps: usize, run: impl FnMut()) -> f64 {
    median_ms(reps, run) / 1e3
}
