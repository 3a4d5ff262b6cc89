//! Bicubic resizing of a grid of vectors (a ViT's patch position embedding) as two matrix
//! products, so that its gradient exists on every backend: burn's GPU backends have no bicubic
//! `interpolate_backward`, and DINO's `interpolate_pos_encoding` trains through this resize
//! whenever a crop is smaller than the configured image.
//!
//! Bicubic interpolation is linear and separable: resizing `P [rows, columns, D]` to
//! `[r, c, D]` is `out = W_r P W_c^T` (per channel), where row `i` of `W_n` holds the weights
//! PyTorch's `F.interpolate(mode="bicubic", align_corners=False)` gives output `i`: the source
//! coordinate `x = (i + 1/2) n_in / n_out - 1/2`, the cubic convolution kernel with
//! `A = -0.75` (Keys 1981) on the four neighbours `floor(x) - 1 ..= floor(x) + 2`, indices
//! clamped to the border.

use burn::tensor::{Tensor, TensorData};

/// Keys' cubic convolution coefficient, PyTorch's and OpenCV's choice.
const A: f64 = -0.75;

/// The `[to, from]` matrix of bicubic weights that resizes `from >= 1` samples to `to`,
/// row-major (`to * from` entries; row `i` sums to 1).
pub fn bicubic_weights(from: usize, to: usize) -> Vec<f32> {
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = from as f64 / to as f64;
    let mut weights = vec![0.0f64; to * from];
    for i in 0..to {
        let x = scale * (i as f64 + 0.5) - 0.5;
        let left = x.floor();
        let t = x - left;
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, w) in taps.into_iter().enumerate() {
            let j = (left as i64 - 1 + k as i64).clamp(0, from as i64 - 1) as usize;
            weights[i * from + j] += w;
        }
    }
    weights.into_iter().map(|w| w as f32).collect()
}

/// `grid [rows, columns, D]` resized bicubically to `[to[0], to[1], D]`.
pub fn resize_grid(grid: Tensor<3>, to: [usize; 2]) -> Tensor<3> {
    let [rows, columns, d] = grid.dims();
    let device = grid.device();
    let weights = |inputs: usize, outputs: usize| {
        Tensor::<2>::from_data(
            TensorData::new(bicubic_weights(inputs, outputs), [outputs, inputs]),
            &device,
        )
    };
    // Rows first, then columns (the column axis brought to the front for the product).
    let resized_rows = weights(rows, to[0])
        .matmul(grid.reshape([rows, columns * d]))
        .reshape([to[0], columns, d])
        .swap_dims(0, 1)
        .reshape([columns, to[0] * d]);
    weights(columns, to[1])
        .matmul(resized_rows)
        .reshape([to[1], to[0], d])
        .swap_dims(0, 1)
}
