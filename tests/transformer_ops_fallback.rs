//! `selfsup::transformer_ops` with the fused kernels turned off (`set_fast_transformer_ops`, a
//! process-wide switch, hence a test binary of its own): the wrappers (the linear layer, GELU,
//! layer norm, attention) then run burn's operations, which must agree with the kernels
//! (forward and gradients).
#![cfg(feature = "flex")]

#[path = "common/transformer_reference.rs"]
mod reference;

use burn::module::Param;
use burn::nn::LayerNormConfig;
use burn::tensor::{Device, Distribution, Tensor};
use reference::*;
use selfsup::kernels::linear::{
    LinearShape, WeightLayout, linear_bias_grad, linear_forward, linear_input_grad,
    linear_weight_grad,
};
use selfsup::kernels::transformer::{
    AttentionShape, RowShape, attention_backward, attention_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward,
};
use selfsup::transformer_ops::{
    fast_transformer_ops_enabled, gelu, layer_norm, linear, multi_head_attention,
    set_fast_transformer_ops,
};

fn widened(values: Vec<f32>) -> Vec<f64> {
    values.into_iter().map(f64::from).collect()
}

#[test]
fn burns_operations_agree_with_the_kernels() {
    set_fast_transformer_ops(false);
    assert!(!fast_transformer_ops_enabled());
    let device = Device::flex().autodiff();
    device.seed(23);
    let (batch, tokens, heads, head_dim) = (2, 9, 3, 4);
    let width = heads * head_dim;
    let rows = batch * tokens;

    let x =
        Tensor::<2>::random([rows, width], Distribution::Normal(0.5, 2.0), &device).require_grad();
    let probe = Tensor::<2>::random([rows, width], Distribution::Normal(0.0, 1.0), &device);
    let (x_values, probe_values) = (values(x.clone()), values(probe.clone()));
    let y = gelu(x.clone());
    let grads = (y.clone() * probe.clone()).sum().backward();
    assert_close("gelu", &values(y), &widened(gelu_forward(&x_values)));
    // burn's GELU backward on flex is the exact derivative, as the kernel's.
    assert_close(
        "gelu backward",
        &values(x.grad(&grads).unwrap()),
        &widened(gelu_backward(&x_values, &probe_values)),
    );

    let mut ln = LayerNormConfig::new(width).with_epsilon(0.1).init(&device);
    ln.gamma = Param::from_tensor(Tensor::random(
        [width],
        Distribution::Normal(1.0, 0.5),
        &device,
    ));
    let (gamma, beta) = (values(ln.gamma.val()), vec![0.0; width]);
    let shape = RowShape { rows, width };
    let y = layer_norm(&ln, x.clone(), 0.1);
    let grads = (y.clone() * probe.clone()).sum().backward();
    let (expected, statistics) = layer_norm_forward(shape, &x_values, &gamma, &beta, 0.1);
    assert_close("layer norm", &values(y), &widened(expected));
    let (dx, dgamma, _) = layer_norm_backward(shape, &x_values, &gamma, &statistics, &probe_values);
    assert_close(
        "layer norm dx",
        &values(x.grad(&grads).unwrap()),
        &widened(dx),
    );
    assert_close(
        "layer norm dgamma",
        &values(ln.gamma.val().grad(&grads).unwrap()),
        &widened(dgamma),
    );

    let qkv = Tensor::<2>::random([rows, 3 * width], Distribution::Normal(0.0, 1.5), &device)
        .require_grad();
    let qkv_values = values(qkv.clone());
    let attention_shape = AttentionShape {
        batch,
        tokens,
        heads,
        head_dim,
    };
    let context = multi_head_attention(qkv.clone(), batch, heads);
    let grads = (context.clone() * probe).sum().backward();
    let (expected, probabilities) = attention_forward(attention_shape, &qkv_values, true);
    assert_close("attention", &values(context), &widened(expected));
    let dqkv = attention_backward(attention_shape, &qkv_values, &probabilities, &probe_values);
    assert_close(
        "attention dqkv",
        &values(qkv.grad(&grads).unwrap()),
        &widened(dqkv),
    );

    let linear_shape = LinearShape {
        rows,
        input: width,
        output: 5,
        layout: WeightLayout::OutputInput,
    };
    let weight =
        Tensor::<2>::random([5, width], Distribution::Normal(0.0, 0.5), &device).require_grad();
    let bias = Tensor::<1>::random([5], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let probe = Tensor::<2>::random([rows, 5], Distribution::Normal(0.0, 1.0), &device);
    let (weight_values, bias_values) = (values(weight.clone()), values(bias.clone()));
    let probe_values = values(probe.clone());
    let y = linear(x.clone(), weight.clone(), bias.clone());
    let grads = (y.clone() * probe).sum().backward();
    let expected = linear_forward(linear_shape, &x_values, &weight_values, &bias_values);
    assert_close("linear", &values(y), &widened(expected));
    let dx = linear_input_grad(linear_shape, &probe_values, &weight_values);
    assert_close("linear dx", &values(x.grad(&grads).unwrap()), &widened(dx));
    let dw = linear_weight_grad(linear_shape, &probe_values, &x_values);
    assert_close(
        "linear dW",
        &values(weight.grad(&grads).unwrap()),
        &widened(dw),
    );
    let db = linear_bias_grad(linear_shape, &probe_values);
    assert_close(
        "linear db",
        &values(bias.grad(&grads).unwrap()),
        &widened(db),
    );
}
