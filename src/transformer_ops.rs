//! The operations of a transformer block, with fused CPU kernels on `Device::flex()`: the
//! linear layers, the exact GELU, layer normalisation and multi-head attention, used by every
//! ViT block, MAE's decoder and I-JEPA's predictor (and the linear layers and GELU by the
//! projection heads).
//!
//! - [`linear`], [`linear_layer`] and [`linear_input_output`]: `x Wᵀ + b` with PyTorch's
//!   `[output, input]` weight, or burn's `nn::Linear` and its layout (the weight stored
//!   transposed), and `∂L/∂x = g W`, `∂L/∂W = gᵀ x`,
//!   `∂L/∂b = Σ_rows g`;
//! - [`gelu`]: `x·Φ(x)`, `Φ` the standard normal CDF (Hendrycks & Gimpel, 2016), with
//!   `∂gelu/∂x = Φ(x) + x·φ(x)`;
//! - [`layer_norm`]: `γ ⊙ (x - μ)/sqrt(σ² + ε) + β` over the last dimension, with the row's mean
//!   `μ` and biased variance `σ²` (Ba et al., 2016), and
//!   `∂L/∂x = r · (g⊙γ - mean(g⊙γ) - x̂ · mean(g⊙γ⊙x̂))`, `r = 1/sqrt(σ² + ε)`;
//! - [`multi_head_attention`]: `softmax(Q Kᵀ/sqrt(d_h)) V` per head (Vaswani et al., 2017) from
//!   the packed projections `[Q K V]`, as `nn.MultiheadAttention` computes it.
//!
//! On the flex device (plain or autodiff, f32) the linear layer is one product with the bias
//! written first, and its weight gradient is computed in the weight's layout
//! ([`crate::kernels::linear`]); GELU and the layer norm are one vectorised pass forward and
//! one backward, and the attention reads its heads in place through strides
//! ([`crate::kernels::transformer`]), where burn zeroes and copies each product's output and
//! adds the bias in a pass of its own, computes GELU with a scalar `erf` per element,
//! composes the layer norm under autodiff from about ten tensor operations (plain flex tensors
//! have burn's fused forward) and the attention from copies of each head and a five-operation
//! softmax. Every other device runs burn's own operations: the same forward up to rounding;
//! note that burn's default GELU backward, which the GPU backends use, is the derivative of the
//! tanh approximation (within about 1e-3 of the exact one). [`set_fast_transformer_ops`] turns
//! the kernels off (for comparisons).

use std::sync::atomic::{AtomicBool, Ordering};

use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

static FAST_TRANSFORMER_OPS: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU linear layers, GELU, layer norm and attention, and SIGReg's
/// Epps-Pulley kernel ([`crate::method::Sigreg::loss`]), on (the default) or off for the whole
/// process.
pub fn set_fast_transformer_ops(enabled: bool) {
    FAST_TRANSFORMER_OPS.store(enabled, Ordering::Relaxed);
}

/// Whether [`linear`], [`gelu`], [`layer_norm`], [`multi_head_attention`] and
/// [`crate::method::Sigreg::loss`] may use the fused CPU kernels.
pub fn fast_transformer_ops_enabled() -> bool {
    FAST_TRANSFORMER_OPS.load(Ordering::Relaxed)
}

/// Whether the kernels run on `x` with `parameters`: enabled, all on the flex device, all
/// autodiff or all plain, all f32.
#[cfg(feature = "flex")]
fn kernels_apply<const D: usize>(x: &Tensor<D>, parameters: &[&Tensor<1>]) -> bool {
    let autodiff = x.device().is_autodiff();
    fast_transformer_ops_enabled()
        && on_flex_f32(x, autodiff)
        && parameters.iter().all(|t| on_flex_f32(*t, autodiff))
}

/// Whether `t` is an f32 tensor on the flex device, autodiff when `autodiff`.
#[cfg(feature = "flex")]
fn on_flex_f32<const D: usize>(t: &Tensor<D>, autodiff: bool) -> bool {
    let device = t.device();
    crate::device::is_cpu(&device)
        && t.dtype() == burn::tensor::DType::F32
        && device.is_autodiff() == autodiff
}

/// A linear layer with PyTorch's weight layout: `x Wᵀ + b` for `x [rows, input]`,
/// `weight [output, input]` and `bias [output]`, the same result and gradients as
/// `x.matmul(weight.transpose()) + bias.unsqueeze()`, by the fused kernel on the flex device.
///
/// # Panics
/// If the shapes do not fit (`x`'s columns differ from `weight`'s, or `bias`'s length from
/// `weight`'s rows).
pub fn linear(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    let ([_, input], [output, weight_input], [bias_len]) = (x.dims(), weight.dims(), bias.dims());
    assert!(
        input == weight_input && output == bias_len,
        "linear layer: x {:?}, weight {:?} and bias {:?} do not fit (expected [rows, input], \
         [output, input] and [output])",
        x.dims(),
        weight.dims(),
        bias.dims()
    );
    #[cfg(feature = "flex")]
    if linear_kernel_applies(&x, &weight, &bias) {
        use crate::kernels::linear::WeightLayout;
        return fused_linear(x, weight, bias, WeightLayout::OutputInput);
    }
    x.matmul(weight.transpose()) + bias.unsqueeze()
}

/// burn's linear layer (weight `[input, output]`, optional bias) applied to `x [rows, input]`:
/// the same result and gradients as `layer.forward(x)`, by the fused kernel on the flex device
/// (see [`linear_input_output`]).
///
/// # Panics
/// If `x`'s columns differ from the layer's input size.
pub fn linear_layer(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    linear_input_output(x, layer.weight.val(), bias)
}

/// A linear layer with burn's weight layout: `x W + b` for `x [rows, input]`,
/// `weight [input, output]` (a parameter, or a weight computed from parameters, as a
/// weight-normalised layer's) and an optional `bias [output]`: the same result and gradients
/// as `x.matmul(weight) + bias.unsqueeze()`, by the fused kernel on the flex device (without
/// a bias it adds a zero one there, which gets no gradient).
///
/// # Panics
/// If the shapes do not fit.
pub fn linear_input_output(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    let ([_, input], [weight_input, output]) = (x.dims(), weight.dims());
    let bias_len = bias.as_ref().map_or(output, |bias| bias.dims()[0]);
    assert!(
        input == weight_input && output == bias_len,
        "linear layer: x {:?}, weight {:?} and bias [{bias_len}] do not fit (expected \
         [rows, input], [input, output] and [output])",
        x.dims(),
        weight.dims()
    );
    #[cfg(feature = "flex")]
    {
        let bias = match &bias {
            Some(bias) => bias.clone(),
            None => Tensor::zeros([output], &x.device()),
        };
        if linear_kernel_applies(&x, &weight, &bias) {
            use crate::kernels::linear::WeightLayout;
            return fused_linear(x, weight, bias, WeightLayout::InputOutput);
        }
    }
    let y = x.matmul(weight);
    match bias {
        Some(bias) => y + bias.unsqueeze(),
        None => y,
    }
}

#[cfg(feature = "flex")]
fn linear_kernel_applies(x: &Tensor<2>, weight: &Tensor<2>, bias: &Tensor<1>) -> bool {
    kernels_apply(x, &[bias]) && on_flex_f32(weight, x.device().is_autodiff())
}

#[cfg(feature = "flex")]
fn fused_linear(
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    layout: crate::kernels::linear::WeightLayout,
) -> Tensor<2> {
    use crate::kernels::linear::FastLinearOps;
    use burn::backend::Dispatch;
    Tensor::from_dispatch(<Dispatch as FastLinearOps>::fast_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        layout,
    ))
}

/// The exact GELU `x·Φ(x)` (PyTorch's `GELU(approximate='none')`), element by element: the
/// same result and gradient as `burn::tensor::activation::gelu`, by the fused kernel on the
/// flex device.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if kernels_apply(&x, &[]) {
        use crate::kernels::transformer::FastTransformerOps;
        use burn::backend::Dispatch;
        return Tensor::from_dispatch(<Dispatch as FastTransformerOps>::fast_gelu(
            x.into_dispatch(),
        ));
    }
    burn::tensor::activation::gelu(x)
}

/// The residual connection `x + y` (tensors of one shape): the same result and gradients as
/// `x + y`, on all cores on the flex device (burn adds tensors of under 4 Mi values on one
/// thread there).
pub fn residual_add<const D: usize>(x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if x.dims() == y.dims() && kernels_apply(&x, &[]) && on_flex_f32(&y, x.device().is_autodiff()) {
        use crate::kernels::transformer::FastTransformerOps;
        use burn::backend::Dispatch;
        return Tensor::from_dispatch(<Dispatch as FastTransformerOps>::fast_residual_add(
            x.into_dispatch(),
            y.into_dispatch(),
        ));
    }
    x + y
}

/// `ln` applied to `x` (normalised over the last dimension): the same result and gradients as
/// `ln.forward(x)`, by the fused kernels on the flex device. `epsilon` must be the one `ln` was
/// configured with (burn keeps it private).
pub fn layer_norm<const D: usize>(ln: &LayerNorm, x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(beta) = &ln.beta {
        let (gamma, beta) = (ln.gamma.val(), beta.val());
        let width = x.dims()[D - 1];
        let width_matches = width > 0 && width == gamma.dims()[0];
        if width_matches && kernels_apply(&x, &[&gamma, &beta]) {
            use crate::kernels::transformer::FastTransformerOps;
            use burn::backend::Dispatch;
            return Tensor::from_dispatch(<Dispatch as FastTransformerOps>::fast_layer_norm(
                x.into_dispatch(),
                gamma.into_dispatch(),
                beta.into_dispatch(),
                epsilon,
            ));
        }
    }
    let _ = epsilon;
    ln.forward(x)
}

/// Multi-head self-attention of `batch` sequences from their packed projections
/// `qkv [batch·N, 3D]` (queries in columns `0..D`, keys in `D..2D`, values in `2D..3D`, head `j`
/// in columns `j·D/heads..(j+1)·D/heads` of each): the context `[batch·N, D]`, heads side by
/// side, before the output projection. By the fused kernels on the flex device.
///
/// # Panics
/// If `batch` or `heads` is zero, or `qkv`'s shape is not `[batch·N, 3·heads·d_h]`.
pub fn multi_head_attention(qkv: Tensor<2>, batch: usize, heads: usize) -> Tensor<2> {
    let [rows, packed] = qkv.dims();
    assert!(
        batch > 0 && heads > 0 && rows % batch == 0 && packed % (3 * heads) == 0,
        "attention: packed projections [{rows}, {packed}] for {batch} sequences of {heads} heads"
    );
    #[cfg(feature = "flex")]
    if kernels_apply(&qkv, &[]) {
        use crate::kernels::transformer::FastTransformerOps;
        use burn::backend::Dispatch;
        return Tensor::from_dispatch(<Dispatch as FastTransformerOps>::fast_attention(
            qkv.into_dispatch(),
            batch,
            heads,
        ));
    }
    composed_attention(qkv, batch, heads)
}

/// [`multi_head_attention`] composed from burn's tensor operations.
fn composed_attention(qkv: Tensor<2>, batch: usize, heads: usize) -> Tensor<2> {
    let [rows, packed] = qkv.dims();
    let (n, d) = (rows / batch, packed / 3);
    let dh = d / heads;
    let head = |i: usize| {
        qkv.clone()
            .narrow(1, i * d, d)
            .reshape([batch, n, heads, dh])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (head(0), head(1), head(2));
    let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt());
    softmax(scores, 3)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([rows, d])
}
