//! The fused CPU GELU, layer norm and multi-head attention (`selfsup::transformer_ops`, kernels
//! in `selfsup::kernels::transformer`) against float64 references (every instruction set, the
//! default thread pool and one thread, bit-identical across both) and against burn's `gelu`,
//! `LayerNorm` and attention composed from tensor operations on the flex autodiff device
//! (outputs and every gradient), on odd shapes, single rows and single tokens.
#![cfg(feature = "flex")]

#[path = "common/transformer_reference.rs"]
mod reference;

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Distribution, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reference::*;
use selfsup::conv::{InstructionSet, limit_instruction_set};
use selfsup::kernels::transformer::{
    AttentionShape, RowShape, attention_backward, attention_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward, residual_add_forward,
};
use selfsup::transformer_ops::{gelu, layer_norm, multi_head_attention, residual_add};

/// A grid over [-12, 12] (both tails, zero, every binade the step visits), plus ±0, ±30,
/// ±1e38, ±2³¹, the kernel's interval boundaries (multiples of 0.75 up to 6) with their
/// neighbours on both sides, and random values, enough to fill several parallel tasks.
fn gelu_inputs(rng: &mut StdRng) -> Vec<f32> {
    let mut x: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
    x.extend([
        0.0,
        -0.0,
        30.0,
        -30.0,
        1e-30,
        -1e-30,
        1e38,
        -1e38,
        2.147_483_6e9,
        -2.147_483_6e9,
    ]);
    for k in 1..=8 {
        let boundary = k as f32 * 0.75;
        for v in [boundary.next_down(), boundary, boundary.next_up()] {
            x.extend([v, -v]);
        }
    }
    x.extend((0..5_000).map(|_| rng.random_range(-6.0f32..6.0)));
    x
}

/// GELU on every point of [`gelu_inputs`]; each instruction set's `(y, dx)`.
fn check_gelu(limit: Option<InstructionSet>, one_thread: &rayon::ThreadPool) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(7);
    let x = gelu_inputs(&mut rng);
    let grad: Vec<f32> = x.iter().map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let y_expected: Vec<f64> = x.iter().map(|&x| gelu_reference(x as f64)).collect();
    let dx_expected: Vec<f64> = x
        .iter()
        .zip(&grad)
        .map(|(&x, &g)| g as f64 * gelu_derivative_reference(x as f64))
        .collect();
    let (y, dx) = (gelu_forward(&x), gelu_backward(&x, &grad));
    let (y_1, dx_1) = one_thread.install(|| (gelu_forward(&x), gelu_backward(&x, &grad)));
    assert_close(&format!("gelu, {limit:?}"), &y, &y_expected);
    assert_close(&format!("gelu backward, {limit:?}"), &dx, &dx_expected);
    assert_eq!(
        (bits(&y), bits(&dx)),
        (bits(&y_1), bits(&dx_1)),
        "one thread, {limit:?}"
    );
    // Well inside the tolerance: measured 1.0e-7 forward and 1.3e-7 backward.
    assert!(max_error(&y, &y_expected) < 5e-7, "gelu error, {limit:?}");
    assert!(
        max_error(&dx, &dx_expected) < 1e-6,
        "backward error, {limit:?}"
    );
    [y, dx].concat()
}

/// The bit patterns of `values` (where `==` would take -0 for +0).
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn check_layer_norm(
    limit: Option<InstructionSet>,
    one_thread: &rayon::ThreadPool,
) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut results = Vec::new();
    for (rows, width, epsilon) in ROW_SHAPES {
        let shape = RowShape { rows, width };
        let x = layer_norm_input(&mut rng, rows, width);
        let gamma = random_values(&mut rng, width, 1.0, 0.5);
        let beta = random_values(&mut rng, width, 0.0, 0.5);
        let grad = random_values(&mut rng, rows * width, 0.0, 1.0);
        let expected = layer_norm_reference(shape, &x, &gamma, &beta, &grad, epsilon);
        let run = || {
            let (y, statistics) = layer_norm_forward(shape, &x, &gamma, &beta, epsilon);
            let (dx, dgamma, dbeta) = layer_norm_backward(shape, &x, &gamma, &statistics, &grad);
            [y, dx, dgamma, dbeta]
        };
        let ours = run();
        let context = format!("layer norm {rows} x {width}, eps {epsilon}, {limit:?}");
        for (name, (actual, expected)) in ["y", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(ours.iter().zip(&expected))
        {
            assert_close(&format!("{context}: {name}"), actual, expected);
        }
        assert_eq!(ours, one_thread.install(run), "{context}: one thread");
        results.extend(ours);
    }
    results
}

fn check_attention(limit: Option<InstructionSet>, one_thread: &rayon::ThreadPool) {
    let mut rng = StdRng::seed_from_u64(13);
    for (batch, tokens, heads, head_dim) in ATTENTION_SHAPES {
        let shape = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
        };
        let d = heads * head_dim;
        // Scores of a few units: the softmax is neither uniform nor one-hot.
        let qkv = random_values(&mut rng, batch * tokens * 3 * d, 0.0, 1.5);
        let grad = random_values(&mut rng, batch * tokens * d, 0.0, 1.0);
        let expected = attention_reference(shape, &qkv, &grad);
        let run = || {
            let (context, probabilities) = attention_forward(shape, &qkv, true);
            let (inference, none) = attention_forward(shape, &qkv, false);
            assert_eq!((&inference, none.len()), (&context, 0));
            let dqkv = attention_backward(shape, &qkv, &probabilities, &grad);
            [context, dqkv]
        };
        let ours = run();
        let context = format!("attention {shape:?}, {limit:?}");
        assert_close(&format!("{context}: context"), &ours[0], &expected[0]);
        assert_close(&format!("{context}: dqkv"), &ours[1], &expected[1]);
        assert_eq!(ours, one_thread.install(run), "{context}: one thread");
    }
}

/// One test sets the instruction-set limit (a process-wide setting), so no other test of this
/// file runs under another test's limit. The element-wise passes follow the limit; the matrix
/// products inside the attention are `gemm`'s, which picks its own micro-kernels.
#[test]
fn kernels_match_float64_reference_on_every_instruction_set() {
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (mut gelu_results, mut layer_norm_results) = (Vec::new(), Vec::new());
    for limit in [
        Some(InstructionSet::Portable),
        Some(InstructionSet::Avx2),
        None,
    ] {
        limit_instruction_set(limit);
        gelu_results.push(check_gelu(limit, &one_thread));
        layer_norm_results.push(check_layer_norm(limit, &one_thread));
        check_attention(limit, &one_thread);
    }
    limit_instruction_set(None);
    // The same operations in the same order on every instruction set (fused multiply-adds are
    // exact everywhere): one result.
    let gelu_bits: Vec<Vec<u32>> = gelu_results.iter().map(|r| bits(r)).collect();
    assert!(gelu_bits.windows(2).all(|pair| pair[0] == pair[1]));
    assert!(layer_norm_results.windows(2).all(|pair| pair[0] == pair[1]));
}

#[test]
fn residual_add_on_all_cores_is_the_element_sum() {
    let mut rng = StdRng::seed_from_u64(19);
    // Several parallel tasks and a ragged last one.
    let x = random_values(&mut rng, 100_003, 0.0, 3.0);
    let y = random_values(&mut rng, 100_003, 1.0, 0.5);
    let expected: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    assert_eq!(residual_add_forward(&x, &y), expected);
    assert!(residual_add_forward(&[], &[]).is_empty());
}

#[test]
fn gelu_propagates_nan_and_infinities_as_pytorch() {
    let y = gelu_forward(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    assert!(
        y[0].is_nan() && y[1] == f32::INFINITY && y[2].is_nan(),
        "{y:?}"
    );
    let dx = gelu_backward(&[f32::NAN, 1e38, -1e38], &[1.0, 1.0, 1.0]);
    assert!(dx[0].is_nan() && dx[1] == 1.0 && dx[2] == 0.0, "{dx:?}");
}

fn flex_layer_norm(width: usize, epsilon: f64, device: &Device) -> LayerNorm {
    let mut ln = LayerNormConfig::new(width)
        .with_epsilon(epsilon)
        .init(device);
    ln.gamma = Param::from_tensor(Tensor::random(
        [width],
        Distribution::Normal(1.0, 0.5),
        device,
    ));
    ln.beta = Some(Param::from_tensor(Tensor::random(
        [width],
        Distribution::Normal(0.0, 0.5),
        device,
    )));
    ln
}

/// The wrappers' outputs are the kernels' bit for bit (so the fused path ran) and match burn's
/// operations, with every gradient, on the flex autodiff device.
#[test]
fn wrappers_run_the_kernels_and_match_burn_with_gradients() {
    let device = Device::flex().autodiff();
    device.seed(17);
    for dims in [[2, 65, 192], [1, 1, 7], [3, 5, 33]] {
        let [b, n, width] = dims;
        let shape = RowShape { rows: b * n, width };
        let x = Tensor::<3>::random(dims, Distribution::Normal(0.5, 2.0), &device).require_grad();
        let probe = Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let x_values = values(x.clone());

        let ours = gelu(x.clone());
        assert_eq!(
            values(ours.clone()),
            gelu_forward(&x_values),
            "fused gelu ran"
        );
        let theirs = burn::tensor::activation::gelu(x.clone());
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe.clone()).sum().backward();
        let context = format!("gelu {dims:?}");
        compare(&context, ours.into_data(), theirs.into_data());
        compare(
            &format!("{context}: dx"),
            x.grad(&g_ours).unwrap().into_data(),
            x.grad(&g_theirs).unwrap().into_data(),
        );

        let ln = flex_layer_norm(width, 1e-6, &device);
        let beta = ln.beta.as_ref().unwrap();
        let ours = layer_norm(&ln, x.clone(), 1e-6);
        let (gamma_values, beta_values) = (values(ln.gamma.val()), values(beta.val()));
        let kernel = layer_norm_forward(shape, &x_values, &gamma_values, &beta_values, 1e-6).0;
        assert_eq!(values(ours.clone()), kernel, "fused layer norm ran");
        let theirs = ln.forward(x.clone());
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe.clone()).sum().backward();
        let context = format!("layer norm {dims:?}");
        compare(&context, ours.into_data(), theirs.into_data());
        compare(
            &format!("{context}: dx"),
            x.grad(&g_ours).unwrap().into_data(),
            x.grad(&g_theirs).unwrap().into_data(),
        );
        compare(
            &format!("{context}: dgamma"),
            ln.gamma.val().grad(&g_ours).unwrap().into_data(),
            ln.gamma.val().grad(&g_theirs).unwrap().into_data(),
        );
        compare(
            &format!("{context}: dbeta"),
            beta.val().grad(&g_ours).unwrap().into_data(),
            beta.val().grad(&g_theirs).unwrap().into_data(),
        );

        // The residual connection, with `x` reaching the sum by two paths (as in a block).
        let y = Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let ours = residual_add(x.clone(), y.clone() * x.clone());
        let theirs = x.clone() + y.clone() * x.clone();
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe.clone()).sum().backward();
        let context = format!("residual add {dims:?}");
        assert_eq!(values(ours), values(theirs), "{context}");
        for (name, t) in [("dx", &x), ("dy", &y)] {
            assert_eq!(
                values(t.grad(&g_ours).unwrap()),
                values(t.grad(&g_theirs).unwrap()),
                "{context}: {name}"
            );
        }
        // One operand without a gradient.
        let constant = Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (residual_add(constant.clone(), x.clone()) * probe.clone())
            .sum()
            .backward();
        let g_theirs = ((constant.clone() + x.clone()) * probe.clone())
            .sum()
            .backward();
        assert_eq!(
            values(x.grad(&g_ours).unwrap()),
            values(x.grad(&g_theirs).unwrap()),
            "{context}: one operand tracked"
        );
        assert!(
            constant.grad(&g_ours).is_none(),
            "{context}: untracked operand"
        );
    }
    for (batch, tokens, heads, head_dim) in [(2, 65, 3, 16), (1, 1, 1, 4), (3, 9, 2, 5)] {
        let shape = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
        };
        let dims = [batch * tokens, 3 * heads * head_dim];
        let qkv = Tensor::<2>::random(dims, Distribution::Normal(0.0, 1.5), &device).require_grad();
        let ours = multi_head_attention(qkv.clone(), batch, heads);
        let kernel = attention_forward(shape, &values(qkv.clone()), false).0;
        assert_eq!(values(ours.clone()), kernel, "fused attention ran");
        let theirs = burn_attention(qkv.clone(), batch, heads);
        let probe = Tensor::<2>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe.clone()).sum().backward();
        let context = format!("attention {shape:?}");
        compare(&context, ours.into_data(), theirs.into_data());
        compare(
            &format!("{context}: dqkv"),
            qkv.grad(&g_ours).unwrap().into_data(),
            qkv.grad(&g_theirs).unwrap().into_data(),
        );
    }
}

/// Without autodiff the kernels run too; a layer norm without `β`, or over an empty last
/// dimension, is left to burn.
#[test]
fn plain_flex_tensors_run_the_kernels_and_other_layer_norms_fall_back() {
    let device = Device::flex();
    device.seed(19);
    let x = Tensor::<2>::random([9, 24], Distribution::Normal(0.0, 3.0), &device);
    let x_values = values(x.clone());
    assert_eq!(values(gelu(x.clone())), gelu_forward(&x_values));
    let ln = flex_layer_norm(24, 1e-5, &device);
    let (gamma, beta) = (
        values(ln.gamma.val()),
        values(ln.beta.as_ref().unwrap().val()),
    );
    let shape = RowShape { rows: 9, width: 24 };
    assert_eq!(
        values(layer_norm(&ln, x.clone(), 1e-5)),
        layer_norm_forward(shape, &x_values, &gamma, &beta, 1e-5).0
    );
    let shape_8 = AttentionShape {
        batch: 3,
        tokens: 3,
        heads: 2,
        head_dim: 4,
    };
    assert_eq!(
        values(multi_head_attention(x.clone(), 3, 2)),
        attention_forward(shape_8, &x_values, false).0
    );

    let mut no_bias = LayerNormConfig::new(24).with_bias(false).init(&device);
    no_bias.gamma = ln.gamma.clone();
    let zeros = vec![0.0; 24];
    let expected = layer_norm_forward(shape, &x_values, &gamma, &zeros, 1e-5).0;
    let expected: Vec<f64> = expected.into_iter().map(f64::from).collect();
    assert_close(
        "layer norm without bias",
        &values(layer_norm(&no_bias, x, 1e-5)),
        &expected,
    );
    let empty = Tensor::<2>::zeros([4, 0], &device);
    let ln_0 = LayerNormConfig::new(0).init(&device);
    assert_eq!(layer_norm(&ln_0, empty, 1e-5).dims(), [4, 0]);
}
