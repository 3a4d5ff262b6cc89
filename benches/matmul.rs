//! The projection heads' matrix products on the flex CPU backend, with the operand layouts of a
//! linear layer's three passes: forward `x · w` (`NN`), the input gradient `dy · wᵀ` (`NT`)
//! and the weight gradient `xᵀ · dy` (`TN`). The default shapes are those of VICReg's and
//! Barlow Twins' heads in the CIFAR-10 step at x0.25 (each view's 256 images on its own, as
//! the heads' batch norm needs: 128 backbone features into 2048-wide layers) and of the papers'
//! 8192-wide expander at batch 128 on a 512-feature backbone, and the ViT-Tiny step's linear
//! layers (64 images of 65 tokens, width 192). Side by side with
//! `benches/reference/matmul_torch.py`.
//!
//! ```text
//! cargo bench --bench matmul
//! SELFSUP_BENCH_SHAPES=512x2048x2048 cargo bench --bench matmul
//! ```
//!
//! Environment: `SELFSUP_BENCH_SHAPES` (comma-separated `MxKxN`: an `M x K` activation times a
//! `K x N` weight), `SELFSUP_BENCH_REPS` (timed repetitions, default 11, after one untimed).
//! Prints `impl,layout,shape,ms,gflops`, the median of the repetitions: `selfsup` is burn's
//! `matmul` on the flex device, `gemm` the `gemm` crate alone with the same strides into an
//! output allocated once (what the flex figure costs beyond it), and `linear` this crate's
//! linear-layer kernels (what the layers run in training since session 41: the forward pass
//! with its bias, each pass into a new output). First comes one `peak,fma,...` row: the f32
//! multiply-add peak of this machine on all the bench's threads (each thread a loop of
//! independent vector FMAs on the widest registers the CPU has, no memory traffic), the
//! ceiling against which the products' GFLOP/s are read.

mod common;

use common::{median_ms, repetitions};

use burn::tensor::{Distribution, Tensor};
use selfsup::kernels::linear::{
    LinearShape, WeightLayout, linear_forward, linear_input_grad, linear_weight_grad,
};
use selfsup::prelude::*;

/// The products of the CIFAR-10 step's heads at x0.25, of the papers' 8192-wide heads, and of
/// the ViT-Tiny step's linear layers (64 images of 65 tokens, width 192: qkv, fc1, fc2).
const DEFAULT_SHAPES: &str =
    "256x128x2048,256x2048x2048,128x512x8192,128x8192x8192,4160x192x576,4160x192x768,4160x768x192";

fn shapes() -> Vec<[usize; 3]> {
    let text = std::env::var("SELFSUP_BENCH_SHAPES").unwrap_or_else(|_| DEFAULT_SHAPES.into());
    text.split(',')
        .map(|s| {
            let dims: Vec<usize> = s
                .split('x')
                .map(|d| d.parse().expect("SELFSUP_BENCH_SHAPES: MxKxN"))
                .collect();
            dims.try_into().expect("SELFSUP_BENCH_SHAPES: MxKxN")
        })
        .collect()
}

fn main() {
    selfsup::kernels::allocator::retain_freed_memory();
    let reps = repetitions(11);
    let device = Device::flex();
    eprintln!(
        "selfsup matmul bench (flex), {} threads, median of {reps}",
        rayon::current_num_threads()
    );
    println!("impl,layout,shape,ms,gflops");
    let (ms, gflops) = fma_peak(reps);
    println!(
        "peak,fma,threads{},{ms:.3},{gflops:.1}",
        rayon::current_num_threads()
    );
    for [m, k, n] in shapes() {
        let random =
            |rows, cols| Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 1.0), &device);
        let (x, w, dy) = (random(m, k), random(k, n), random(m, n));
        let flops = 2.0 * (m * k * n) as f64;
        let layouts: [(&str, &dyn Fn() -> Tensor<2>); 3] = [
            ("NN", &|| x.clone().matmul(w.clone())),
            ("NT", &|| dy.clone().matmul(w.clone().transpose())),
            ("TN", &|| x.clone().transpose().matmul(dy.clone())),
        ];
        for (layout, product) in layouts {
            let ms = median_ms(reps, || {
                // flex computes eagerly: the product is done when the call returns, and
                // reading it back would time a copy of the output too.
                std::hint::black_box(product());
            });
            println!(
                "selfsup,{layout},{m}x{k}x{n},{ms:.3},{:.1}",
                flops / ms / 1e6
            );
            let ms = raw_gemm_ms(layout, [m, k, n], reps);
            println!("gemm,{layout},{m}x{k}x{n},{ms:.3},{:.1}", flops / ms / 1e6);
            let ms = linear_kernel_ms(layout, [m, k, n], reps);
            println!(
                "linear,{layout},{m}x{k}x{n},{ms:.3},{:.1}",
                flops / ms / 1e6
            );
        }
    }
}

/// The same pass of a linear layer by `selfsup::kernels::linear` (what `transformer_ops::linear`
/// and `linear_layer` run on the flex device) with burn's weight layout `[input, output]`:
/// `NN` is the forward pass with its bias, `NT` the input gradient and `TN` the weight gradient,
/// each returning a new output as in training.
fn linear_kernel_ms(layout: &str, [m, k, n]: [usize; 3], reps: usize) -> f64 {
    let values = |len: usize| -> Vec<f32> { (0..len).map(|i| (i % 997) as f32 / 997.0).collect() };
    let (x, w, dy, bias) = (values(m * k), values(k * n), values(m * n), values(n));
    let shape = LinearShape {
        rows: m,
        input: k,
        output: n,
        layout: WeightLayout::InputOutput,
    };
    median_ms(reps, || {
        let out = match layout {
            "NN" => linear_forward(shape, &x, &w, &bias),
            "NT" => linear_input_grad(shape, &dy, &w),
            _ => linear_weight_grad(shape, &dy, &x),
        };
        std::hint::black_box(out);
    })
}

/// The same product by the `gemm` crate alone, called as flex calls it (the same strides, all
/// threads), into an output buffer allocated once: what the flex figure costs beyond `gemm`.
fn raw_gemm_ms(layout: &str, [m, k, n]: [usize; 3], reps: usize) -> f64 {
    let values = |len: usize| -> Vec<f32> { (0..len).map(|i| (i % 997) as f32 / 997.0).collect() };
    // Row-major operands as the layout stores them: `x [m, k]`, `w [k, n]`, `dy [m, n]`.
    let (x, w, dy) = (values(m * k), values(k * n), values(m * n));
    // (rows, cols, inner, lhs, lhs (row, col) strides, rhs, rhs (row, col) strides)
    let (rows, cols, inner, lhs, lhs_strides, rhs, rhs_strides) = match layout {
        "NN" => (m, n, k, &x, (k, 1), &w, (n, 1)),
        "NT" => (m, k, n, &dy, (n, 1), &w, (1, n)),
        _ => (k, n, m, &x, (1, k), &dy, (n, 1)),
    };
    let mut out = vec![0.0f32; rows * cols];
    median_ms(reps, || {
        // SAFETY: every view lies inside its vector: `lhs` is `rows x inner` and `rhs` is
        // `inner x cols` under the strides above, and `out` holds `rows x cols`.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                inner,
                out.as_mut_ptr(),
                1,
                cols as isize,
                false,
                lhs.as_ptr(),
                lhs_strides.1 as isize,
                lhs_strides.0 as isize,
                rhs.as_ptr(),
                rhs_strides.1 as isize,
                rhs_strides.0 as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        std::hint::black_box(&out);
    })
}

/// Vector FMA instructions each thread issues per timed run of [`fma_peak`].
const PEAK_FMAS_PER_THREAD: u64 = 100_000_000;

/// The f32 multiply-add peak of this machine: every rayon thread runs twelve independent chains
/// of vector FMAs (enough to cover the FMA latency on two pipes) on registers only, the widest
/// vectors the CPU has; returns the median milliseconds and GFLOP/s of all threads together.
fn fma_peak(reps: usize) -> (f64, f64) {
    let threads = rayon::current_num_threads();
    let lanes = fma_lanes();
    let ms = median_ms(reps.min(5), || {
        let sums: Vec<f32> = rayon::broadcast(|_| fma_chains(PEAK_FMAS_PER_THREAD / 12));
        std::hint::black_box(sums);
    });
    let flops = 2.0 * lanes as f64 * (PEAK_FMAS_PER_THREAD / 12 * 12) as f64 * threads as f64;
    (ms, flops / ms / 1e6)
}

/// The f32 lanes of the vectors [`fma_chains`] runs on.
fn fma_lanes() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return 16;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return 8;
        }
    }
    1
}

/// `rounds` rounds of twelve independent FMAs on vectors of [`fma_lanes`] lanes; returns a sum
/// of the results so that no round can be optimised away.
fn fma_chains(rounds: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { fma_chains_avx512(rounds) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { fma_chains_avx2(rounds) };
        }
    }
    let mut chains = [0.5f32; 12];
    for _ in 0..rounds {
        for c in &mut chains {
            *c = c.mul_add(0.999_999, 1e-7);
        }
    }
    chains.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains_avx2(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (scale, shift) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut chains = [_mm256_set1_ps(0.5); 12];
    for _ in 0..rounds {
        for c in &mut chains {
            *c = _mm256_fmadd_ps(*c, scale, shift);
        }
    }
    let mut lanes = [0.0f32; 8];
    let total = chains
        .iter()
        .fold(_mm256_setzero_ps(), |a, &c| _mm256_add_ps(a, c));
    // SAFETY: `lanes` holds the 8 values of one 256-bit vector.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (scale, shift) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut chains = [_mm512_set1_ps(0.5); 12];
    for _ in 0..rounds {
        for c in &mut chains {
            *c = _mm512_fmadd_ps(*c, scale, shift);
        }
    }
    let total = chains
        .iter()
        .fold(_mm512_setzero_ps(), |a, &c| _mm512_add_ps(a, c));
    _mm512_reduce_add_ps(total)
}
