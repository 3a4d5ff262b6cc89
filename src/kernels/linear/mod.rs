//! A linear layer `y = x Wᵀ + b` with the weight `W [output, input]` stored as PyTorch stores
//! it or transposed as burn's `nn::Linear` stores it ([`WeightLayout`]), in as few memory passes
//! as the products allow, and its backward pass `∂L/∂x = g W`, `∂L/∂W = gᵀ x`,
//! `∂L/∂b = Σ_rows g` for the upstream gradient `g`:
//!
//! - the forward pass adds the bias to each thread's block of the output right after computing
//!   it (burn's composition zeroes a fresh output, copies it once more into an aligned buffer,
//!   then adds the bias in a pass of its own);
//! - the weight gradient is computed in the weight's own layout (for PyTorch's, burn computes
//!   `xᵀ g` and transposes it, which a later operation copies);
//! - each product of at least 192³ multiply-adds is split into one block of output rows (or
//!   columns) per rayon thread, each a single-threaded `gemm` call. The result is the same on
//!   every run with the same thread count; another thread count may sum in another order (the
//!   `gemm` crate's blocking depends on the block's size) and differ by rounding.
//!
//! [`FastLinearOps`] is their burn backend extension; [`crate::transformer_ops::linear`] routes
//! to it on the flex device.

mod extension;

pub use extension::FastLinearOps;

use rayon::prelude::*;

use super::gemm::{Mat, product_plus_row_vec, product_vec};

/// How a linear layer's weight is stored (row-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[output, input]`: PyTorch's `nn.Linear` (and this crate's ViT); `y = x Wᵀ + b`.
    OutputInput,
    /// `[input, output]`: burn's `nn::Linear`; `y = x W + b` for the stored `W`.
    InputOutput,
}

/// The sizes of a linear layer's product and its weight's layout: `rows` inputs of `input`
/// values each, mapped to `output` values each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    /// Rows of `x` (images times tokens).
    pub rows: usize,
    /// Values per input row.
    pub input: usize,
    /// Values per output row: the bias's length.
    pub output: usize,
    /// How the weight is stored.
    pub layout: WeightLayout,
}

impl LinearShape {
    /// The weight as the `[output, input]` matrix `W` of `y = x Wᵀ + b`.
    fn weight<'a>(&self, weight: &'a [f32]) -> Mat<'a> {
        match self.layout {
            WeightLayout::OutputInput => Mat::row_major(weight, self.input),
            WeightLayout::InputOutput => Mat::row_major(weight, self.output).transposed(),
        }
    }

    /// The weight's dimensions as stored.
    pub fn weight_dims(&self) -> [usize; 2] {
        match self.layout {
            WeightLayout::OutputInput => [self.output, self.input],
            WeightLayout::InputOutput => [self.input, self.output],
        }
    }

    fn check(&self, what: &str, values: &[f32], expected: usize) {
        assert_eq!(
            values.len(),
            expected,
            "linear layer {self:?}: {what} has {} values, expected {expected}",
            values.len()
        );
    }
}

/// `y = x Wᵀ + b` for `x [rows, input]`, the weight (in `shape.layout`) and `bias [output]`, all
/// row-major: `y [rows, output]`.
///
/// # Panics
/// If a slice's length does not match `shape`.
pub fn linear_forward(shape: LinearShape, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let LinearShape {
        rows,
        input,
        output,
        ..
    } = shape;
    shape.check("x", x, rows * input);
    shape.check("weight", weight, output * input);
    shape.check("bias", bias, output);
    product_plus_row_vec(
        [rows, output, input],
        Mat::row_major(x, input),
        shape.weight(weight).transposed(),
        Some(bias),
    )
}

/// `∂L/∂x = g W` (`[rows, input]`) for the upstream gradient `grad [rows, output]`.
///
/// # Panics
/// If a slice's length does not match `shape`.
pub fn linear_input_grad(shape: LinearShape, grad: &[f32], weight: &[f32]) -> Vec<f32> {
    let LinearShape {
        rows,
        input,
        output,
        ..
    } = shape;
    shape.check("grad", grad, rows * output);
    shape.check("weight", weight, output * input);
    product_vec(
        [rows, input, output],
        Mat::row_major(grad, output),
        shape.weight(weight),
    )
}

/// `∂L/∂W = gᵀ x` in the weight's layout: `[output, input]`, or its transpose `xᵀ g`
/// (`[input, output]`).
///
/// # Panics
/// If a slice's length does not match `shape`.
pub fn linear_weight_grad(shape: LinearShape, grad: &[f32], x: &[f32]) -> Vec<f32> {
    let LinearShape {
        rows,
        input,
        output,
        layout,
    } = shape;
    shape.check("grad", grad, rows * output);
    shape.check("x", x, rows * input);
    let (grad, x) = (Mat::row_major(grad, output), Mat::row_major(x, input));
    match layout {
        WeightLayout::OutputInput => product_vec([output, input, rows], grad.transposed(), x),
        WeightLayout::InputOutput => product_vec([input, output, rows], x.transposed(), grad),
    }
}

/// `∂L/∂b = Σ_rows g`, `[output]`: each column summed over blocks of rows in f32 (vectorised
/// across the columns), the blocks' sums added in f64, so the rounding error does not grow with
/// the number of rows. The tasks split the rows as well as the columns into chunks of a fixed
/// size (a ViT's 192 outputs are one block of columns, which left one core idle when the rows
/// were not split too), and the chunks' totals are added in order: the same result on any
/// number of threads.
///
/// # Panics
/// If `grad`'s length does not match `shape`.
pub fn linear_bias_grad(shape: LinearShape, grad: &[f32]) -> Vec<f32> {
    /// Columns per task.
    const COLUMNS: usize = 256;
    /// Rows summed in f32 before their sum joins the f64 total.
    const ROWS: usize = 64;
    /// Rows per task: a multiple of [`ROWS`], 768 KiB of a 192-wide gradient.
    const CHUNK: usize = 16 * ROWS;
    let LinearShape { rows, output, .. } = shape;
    shape.check("grad", grad, rows * output);
    if output == 0 || rows == 0 {
        return vec![0.0; output];
    }
    let (blocks, chunks) = (output.div_ceil(COLUMNS), rows.div_ceil(CHUNK));
    let partials: Vec<Vec<f64>> = (0..chunks * blocks)
        .into_par_iter()
        .map(|task| {
            let (chunk, first) = (task / blocks, (task % blocks) * COLUMNS);
            let width = COLUMNS.min(output - first);
            let chunk_rows =
                &grad[chunk * CHUNK * output..][..CHUNK.min(rows - chunk * CHUNK) * output];
            let mut total = vec![0.0f64; width];
            let mut block = vec![0.0f32; width];
            for rows in chunk_rows.chunks(ROWS * output) {
                block.fill(0.0);
                for row in rows.chunks_exact(output) {
                    for (b, &g) in block.iter_mut().zip(&row[first..][..width]) {
                        *b += g;
                    }
                }
                for (t, &b) in total.iter_mut().zip(&block) {
                    *t += f64::from(b);
                }
            }
            total
        })
        .collect();
    let mut totals = vec![0.0f64; output];
    for (task, partial) in partials.iter().enumerate() {
        let first = (task % blocks) * COLUMNS;
        for (t, &p) in totals[first..].iter_mut().zip(partial) {
            *t += p;
        }
    }
    totals.into_iter().map(|t| t as f32).collect()
}
