//! The ViT step's fused operations besides its linear layers, one call each on the ViT-Tiny
//! step's shapes (64 images of 65 tokens, width 192, MLP 768, 3 heads of 64): the exact GELU
//! forward and backward on the MLP's `[4160, 768]` hidden layer, layer norm forward and
//! backward on `[4160, 192]`, attention forward and backward on the packed `[4160, 576]`
//! projections.
//!
//! ```text
//! cargo bench --bench transformer_ops
//! ```
//!
//! Environment: `SELFSUP_BENCH_REPS` (timed repetitions, default 21, after one untimed),
//! `SELFSUP_BENCH_ROWS` (token rows of the GELU and layer norm calls, default 4160; a few
//! hundred keep them in the caches).
//! Prints `impl,operation,ms,ns_per_value`: the median milliseconds of one call on all the
//! bench's threads, and the CPU nanoseconds per value of its input (milliseconds x threads /
//! values). Side by side with `benches/reference/transformer_ops_torch.py` in
//! `benches/transformer_ops.sh`.

mod common;

use common::{median_ms, repetitions};
use selfsup::kernels::transformer::{
    AttentionShape, RowShape, attention_backward, attention_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward,
};

/// Rows of the ViT-Tiny step's token matrix: 64 images of 64 patches and a class token.
const STEP_ROWS: usize = 64 * 65;
const WIDTH: usize = 192;
const MLP: usize = 768;

/// `len` values spread over [-4, 4) without a random-number generator.
fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 8000) as f32 / 1000.0 - 4.0)
        .collect()
}

fn report(operation: &str, values: usize, ms: f64) {
    let threads = rayon::current_num_threads() as f64;
    println!(
        "selfsup,{operation},{ms:.3},{:.2}",
        ms * 1e6 * threads / values as f64
    );
}

fn main() {
    // As `pretrain` does: freed blocks stay on the heap, so an output is not a fresh mapping.
    selfsup::kernels::allocator::retain_freed_memory();
    let reps = repetitions(21);
    eprintln!(
        "selfsup transformer ops bench, {} threads, median of {reps}",
        rayon::current_num_threads()
    );
    println!("impl,operation,ms,ns_per_value");
    let rows = std::env::var("SELFSUP_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(STEP_ROWS);
    let hidden = values(rows * MLP);
    let grad = values(rows * MLP);
    report(
        "gelu_forward",
        hidden.len(),
        median_ms(reps, || {
            std::hint::black_box(gelu_forward(&hidden));
        }),
    );
    report(
        "gelu_backward",
        hidden.len(),
        median_ms(reps, || {
            std::hint::black_box(gelu_backward(&hidden, &grad));
        }),
    );

    let shape = RowShape { rows, width: WIDTH };
    let (tokens, token_grad) = (values(rows * WIDTH), values(rows * WIDTH));
    let (gamma, beta) = (values(WIDTH), values(WIDTH));
    report(
        "layer_norm_forward",
        tokens.len(),
        median_ms(reps, || {
            std::hint::black_box(layer_norm_forward(shape, &tokens, &gamma, &beta, 1e-6));
        }),
    );
    let (_, statistics) = layer_norm_forward(shape, &tokens, &gamma, &beta, 1e-6);
    report(
        "layer_norm_backward",
        tokens.len(),
        median_ms(reps, || {
            std::hint::black_box(layer_norm_backward(
                shape,
                &tokens,
                &gamma,
                &statistics,
                &token_grad,
            ));
        }),
    );

    let attention = AttentionShape {
        batch: 64,
        tokens: 65,
        heads: 3,
        head_dim: 64,
    };
    let qkv: Vec<f32> = values(STEP_ROWS * 3 * WIDTH)
        .iter()
        .map(|v| v * 0.25)
        .collect();
    report(
        "attention_forward",
        qkv.len(),
        median_ms(reps, || {
            std::hint::black_box(attention_forward(attention, &qkv, true));
        }),
    );
    let (_, probabilities) = attention_forward(attention, &qkv, true);
    let context_grad = values(STEP_ROWS * WIDTH);
    report(
        "attention_backward",
        qkv.len(),
        median_ms(reps, || {
            std::hint::black_box(attention_backward(
                attention,
                &qkv,
                &probabilities,
                &context_grad,
            ));
        }),
    );
}
