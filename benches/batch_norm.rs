//! The fused batch-norm kernels alone: per-channel statistics, the normalisation with its ReLU,
//! the training-mode backward after a ReLU, and after a residual add + ReLU (fused, and as its
//! two parts: the ReLU's mask, then the backward without a ReLU), on the shapes of the CIFAR-10 benchmark's step (ResNet-18
//! width 16, batch 256: the first and last stages' activations, and the heads' features).
//! Prints the median milliseconds of `SELFSUP_BENCH_REPS` (default 30) calls per kernel.
//! `cargo bench --bench batch_norm`.

mod common;

use common::{median_ms, repetitions};

use selfsup::batch_norm::{
    Epilogue, NormShape, channel_moments, normalize, normalize_add_relu_backward,
    normalize_backward, relu_backward,
};

fn main() {
    // As `pretrain` does on the CPU: the kernels' outputs reuse freed memory instead of faulting
    // in fresh pages every call.
    selfsup::kernels::allocator::retain_freed_memory();
    let reps = repetitions(30);
    println!(
        "shape,moments_ms,normalize_relu_ms,backward_relu_ms,backward_add_relu_ms,\
         backward_add_relu_in_two_passes_ms"
    );
    for (batch, channels, pixels) in [
        (256, 16, 1024),
        (256, 128, 16),
        (256, 2048, 1),
        (256, 512, 1),
    ] {
        let shape = NormShape {
            batch,
            channels,
            pixels,
        };
        let len = batch * channels * pixels;
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 1.5)
            .collect();
        let dy: Vec<f32> = (0..len)
            .map(|i| ((i * 104729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let gamma = vec![1.1f32; channels];
        let beta = vec![0.1f32; channels];
        let moments = median_ms(reps, || {
            std::hint::black_box(channel_moments(shape, &x));
        });
        let (mean, var) = channel_moments(shape, &x);
        let forward = median_ms(reps, || {
            std::hint::black_box(normalize(
                shape,
                &x,
                &gamma,
                &beta,
                &mean,
                &var,
                1e-5,
                Epilogue::Relu,
            ));
        });
        let backward = median_ms(reps, || {
            std::hint::black_box(normalize_backward(
                shape, &x, &gamma, &beta, &mean, &var, 1e-5, &dy, true,
            ));
        });
        let y = normalize(shape, &x, &gamma, &beta, &mean, &var, 1e-5, Epilogue::Relu);
        let add_relu = median_ms(reps, || {
            std::hint::black_box(normalize_add_relu_backward(
                shape, &x, &gamma, &mean, &var, 1e-5, &dy, &y,
            ));
        });
        let add_relu_in_two_passes = median_ms(reps, || {
            let masked = relu_backward(&y, &dy);
            std::hint::black_box(normalize_backward(
                shape, &x, &gamma, &beta, &mean, &var, 1e-5, &masked, false,
            ));
        });
        println!(
            "{batch}x{channels}x{pixels},{moments:.3},{forward:.3},{backward:.3},{add_relu:.3},\
             {add_relu_in_two_passes:.3}"
        );
    }
}
