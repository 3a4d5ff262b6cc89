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
//! with its bias, each pass into a new output).

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
