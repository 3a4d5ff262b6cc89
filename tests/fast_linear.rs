//! The fused linear layer (`selfsup::transformer_ops::linear` with PyTorch's weight layout and
//! `linear_layer` for burn's `nn::Linear`, kernels in `selfsup::kernels::linear`) against a
//! float64 reference (both layouts, the default thread pool and one thread; bit-identical on a
//! rerun) and against burn's `x.matmul(wᵀ) + b` on the flex
//! autodiff device (output and the gradients of `x`, the weight and the bias, and only those
//! that are tracked), on odd shapes, a single row, a single input and output, and shapes large
//! enough for the products to run on every thread.
#![cfg(feature = "flex")]

#[path = "common/transformer_reference.rs"]
mod reference;

use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Gradients, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use reference::*;
use selfsup::kernels::linear::{
    LinearShape, WeightLayout, linear_bias_grad, linear_forward, linear_input_grad,
    linear_weight_grad,
};
use selfsup::transformer_ops::{linear, linear_input_output, linear_layer};

/// `(rows, input, output)`: a single value, a single row, one output, odd sizes below and
/// above a vector's width, and three shapes above the threshold at which the products use every
/// thread (192³ multiply-adds): two split by rows of the output (one of them the ViT-Tiny's
/// MLP at 4 images), and one whose forward and input-gradient products, wider than tall, are
/// split by columns.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (1, 192, 576),
    (5, 7, 1),
    (13, 33, 17),
    (70, 9, 40),
    (260, 192, 160),
    (260, 768, 192),
    (50, 200, 770),
    // The bias gradient's tasks over chunks of 1024 rows and blocks of 256 columns, both ragged.
    (1100, 3, 300),
];

/// `(y, dx, dW, db)` in float64 for the upstream gradient `grad`.
fn linear_reference(
    shape: LinearShape,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    grad: &[f32],
) -> [Vec<f64>; 4] {
    let LinearShape {
        rows,
        input,
        output,
        layout,
    } = shape;
    // Where `W[o][i]` of `y = x Wᵀ + b` is stored.
    let at = |o: usize, i: usize| match layout {
        WeightLayout::OutputInput => o * input + i,
        WeightLayout::InputOutput => i * output + o,
    };
    let (x, w, g) = (widen(x), widen(weight), widen(grad));
    let mut y = vec![0.0; rows * output];
    let mut dx = vec![0.0; rows * input];
    let mut dw = vec![0.0; output * input];
    let mut db = vec![0.0; output];
    for r in 0..rows {
        for o in 0..output {
            let dot: f64 = (0..input).map(|i| x[r * input + i] * w[at(o, i)]).sum();
            y[r * output + o] = dot + bias[o] as f64;
            let g_ro = g[r * output + o];
            db[o] += g_ro;
            for i in 0..input {
                dx[r * input + i] += g_ro * w[at(o, i)];
                dw[at(o, i)] += g_ro * x[r * input + i];
            }
        }
    }
    [y, dx, dw, db]
}

fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

#[test]
fn kernels_match_float64_reference_and_rerun_bit_identically() {
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let layouts = [WeightLayout::OutputInput, WeightLayout::InputOutput];
    for ((rows, input, output), layout) in SHAPES.into_iter().flat_map(|s| layouts.map(|l| (s, l)))
    {
        let shape = LinearShape {
            rows,
            input,
            output,
            layout,
        };
        // Weights at the scale of their initialisation (`1/sqrt(input)`), so that outputs are
        // of order one and float32's rounding of long sums stays within the tolerance.
        let x = random_values(&mut rng, rows * input, 0.3, 1.0);
        let weight = random_values(&mut rng, output * input, 0.0, (input as f32).sqrt().recip());
        let bias = random_values(&mut rng, output, 0.5, 1.0);
        let grad = random_values(&mut rng, rows * output, 0.0, 1.0);
        let run = || {
            [
                linear_forward(shape, &x, &weight, &bias),
                linear_input_grad(shape, &grad, &weight),
                linear_weight_grad(shape, &grad, &x),
                linear_bias_grad(shape, &grad),
            ]
        };
        let ours = run();
        let expected = linear_reference(shape, &x, &weight, &bias, &grad);
        for (name, (actual, expected)) in ["y", "dx", "dW", "db"]
            .iter()
            .zip(ours.iter().zip(&expected))
        {
            assert_close(&format!("{shape:?}: {name}"), actual, expected);
        }
        assert_eq!(ours, run(), "{shape:?}: a rerun");
        assert_eq!(
            ours[3],
            one_thread.install(|| linear_bias_grad(shape, &grad)),
            "{shape:?}: the bias gradient on one thread"
        );
        for (name, (actual, expected)) in ["y", "dx", "dW", "db"]
            .iter()
            .zip(one_thread.install(run).iter().zip(&expected))
        {
            assert_close(&format!("{shape:?}, one thread: {name}"), actual, expected);
        }
    }
}

/// Empty dimensions: no rows (an empty output, zero weight and bias gradients: sums over no
/// rows), no inputs (the output is the bias), no outputs (a zero input gradient).
#[test]
fn empty_dimensions_give_empty_outputs_or_zero_sums() {
    let shape = |rows, input, output| LinearShape {
        rows,
        input,
        output,
        layout: WeightLayout::OutputInput,
    };
    let no_rows = shape(0, 3, 2);
    assert!(linear_forward(no_rows, &[], &[1.0; 6], &[1.0, 2.0]).is_empty());
    assert!(linear_input_grad(no_rows, &[], &[1.0; 6]).is_empty());
    assert_eq!(linear_weight_grad(no_rows, &[], &[]), vec![0.0; 6]);
    assert_eq!(linear_bias_grad(no_rows, &[]), vec![0.0; 2]);

    let no_inputs = shape(2, 0, 3);
    let bias = [1.0, -2.0, 0.5];
    assert_eq!(
        linear_forward(no_inputs, &[], &[], &bias),
        [bias, bias].concat()
    );
    assert!(linear_weight_grad(no_inputs, &[1.0; 6], &[]).is_empty());

    let no_outputs = shape(2, 3, 0);
    assert!(linear_forward(no_outputs, &[1.0; 6], &[], &[]).is_empty());
    assert_eq!(linear_input_grad(no_outputs, &[], &[]), vec![0.0; 6]);
    assert!(linear_bias_grad(no_outputs, &[]).is_empty());
}

/// The bias gradient sums many rows without its error growing with them: 100,000 rows sum
/// within float32 rounding of the exact total (where a float32 running sum rounds at each of
/// the 100,000 additions).
#[test]
fn bias_gradient_of_many_rows_keeps_float32_precision() {
    let rows = 100_000;
    let shape = LinearShape {
        rows,
        input: 1,
        output: 3,
        layout: WeightLayout::OutputInput,
    };
    let grad: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let g = 1.0 + 1e-4 * (r % 1000) as f32;
            [g, -g, 0.5 * g]
        })
        .collect();
    let exact: Vec<f64> = (0..3)
        .map(|c| grad.iter().skip(c).step_by(3).map(|&g| f64::from(g)).sum())
        .collect();
    let db = linear_bias_grad(shape, &grad);
    for (&actual, &exact) in db.iter().zip(&exact) {
        assert!(
            (f64::from(actual) - exact).abs() <= 1e-6 * exact.abs(),
            "bias gradient {actual}, exact {exact}"
        );
    }
}

/// The gradient of `t` in both backward passes (the kernel's and burn's) agrees.
fn grads_match<const D: usize>(
    context: &str,
    name: &str,
    t: &Tensor<D>,
    ours: &Gradients,
    theirs: &Gradients,
) {
    compare(
        &format!("{context}: {name}"),
        t.grad(ours).unwrap().into_data(),
        t.grad(theirs).unwrap().into_data(),
    );
}

/// burn's composition of the same layer.
fn burn_linear(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    x.matmul(weight.transpose()) + bias.unsqueeze()
}

#[test]
fn wrapper_runs_the_kernel_and_matches_burn_with_gradients() {
    let device = Device::flex().autodiff();
    device.seed(29);
    for (rows, input, output) in SHAPES {
        let shape = LinearShape {
            rows,
            input,
            output,
            layout: WeightLayout::OutputInput,
        };
        let random = |dims: [usize; 2], spread| {
            Tensor::<2>::random(dims, Distribution::Normal(0.0, spread), &device)
        };
        let x = random([rows, input], 2.0).require_grad();
        let weight = random([output, input], 0.5).require_grad();
        let bias =
            Tensor::<1>::random([output], Distribution::Normal(0.5, 1.0), &device).require_grad();
        let probe = random([rows, output], 1.0);

        let ours = linear(x.clone(), weight.clone(), bias.clone());
        let kernel = linear_forward(
            shape,
            &values(x.clone()),
            &values(weight.clone()),
            &values(bias.clone()),
        );
        assert_eq!(values(ours.clone()), kernel, "{shape:?}: the kernel ran");
        let theirs = burn_linear(x.clone(), weight.clone(), bias.clone());
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe).sum().backward();
        let context = format!("{shape:?}");
        compare(&context, ours.into_data(), theirs.into_data());
        grads_match(&context, "dx", &x, &g_ours, &g_theirs);
        grads_match(&context, "dW", &weight, &g_ours, &g_theirs);
        grads_match(&context, "db", &bias, &g_ours, &g_theirs);
    }
}

/// An input that needs no gradient (the first layer's images, a frozen layer) gets none, and
/// the other gradients are unchanged; without autodiff the kernel runs too.
#[test]
fn untracked_inputs_get_no_gradient_and_plain_tensors_run_the_kernel() {
    let device = Device::flex().autodiff();
    device.seed(31);
    let x = Tensor::<2>::random([6, 10], Distribution::Normal(0.0, 1.0), &device);
    let weight = Tensor::<2>::random([4, 10], Distribution::Normal(0.0, 1.0), &device);
    let bias = Tensor::<1>::random([4], Distribution::Normal(0.0, 1.0), &device);
    let probe = Tensor::<2>::random([6, 4], Distribution::Normal(0.0, 1.0), &device);

    let frozen_weight = weight.clone();
    let tracked_x = x.clone().require_grad();
    let y = linear(tracked_x.clone(), frozen_weight.clone(), bias.clone());
    let grads = (y * probe.clone()).sum().backward();
    assert!(frozen_weight.grad(&grads).is_none(), "frozen weight");
    assert!(bias.grad(&grads).is_none(), "frozen bias");
    let expected = probe.clone().matmul(weight.clone());
    compare(
        "dx alone",
        tracked_x.grad(&grads).unwrap().into_data(),
        expected.into_data(),
    );

    let tracked_weight = weight.clone().require_grad();
    let y = linear(x.clone(), tracked_weight.clone(), bias.clone());
    let grads = (y * probe.clone()).sum().backward();
    assert!(x.grad(&grads).is_none(), "untracked input");
    let expected = probe.transpose().matmul(x.clone());
    compare(
        "dW alone",
        tracked_weight.grad(&grads).unwrap().into_data(),
        expected.into_data(),
    );

    let plain = Device::flex();
    let to_plain = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &plain);
    let (x, weight) = (to_plain(x), to_plain(weight));
    let bias = Tensor::<1>::from_data(bias.into_data(), &plain);
    let shape = LinearShape {
        rows: 6,
        input: 10,
        output: 4,
        layout: WeightLayout::OutputInput,
    };
    let y = linear(x.clone(), weight.clone(), bias.clone());
    let kernel = linear_forward(shape, &values(x), &values(weight), &values(bias));
    assert_eq!(values(y), kernel, "plain flex tensors run the kernel");
}

/// burn's `nn::Linear` (weight `[input, output]`), with and without bias: the fused kernel runs
/// and matches `layer.forward` with every gradient.
#[test]
fn burns_linear_modules_run_the_kernel_and_match_their_forward() {
    let device = Device::flex().autodiff();
    device.seed(37);
    for (rows, input, output) in [(1, 1, 1), (13, 33, 17), (260, 192, 160)] {
        for bias in [true, false] {
            let layer = LinearConfig::new(input, output)
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<2>::random([rows, input], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let probe =
                Tensor::<2>::random([rows, output], Distribution::Normal(0.0, 1.0), &device);
            let ours = linear_layer(&layer, x.clone());
            let shape = LinearShape {
                rows,
                input,
                output,
                layout: WeightLayout::InputOutput,
            };
            let bias_values = match &layer.bias {
                Some(b) => values(b.val()),
                None => vec![0.0; output],
            };
            let kernel = linear_forward(
                shape,
                &values(x.clone()),
                &values(layer.weight.val()),
                &bias_values,
            );
            assert_eq!(values(ours.clone()), kernel, "{shape:?}: the kernel ran");
            let theirs = layer.forward(x.clone());
            let g_ours = (ours.clone() * probe.clone()).sum().backward();
            let g_theirs = (theirs.clone() * probe).sum().backward();
            let context = format!("{shape:?}, bias {bias}");
            compare(&context, ours.into_data(), theirs.into_data());
            grads_match(&context, "dx", &x, &g_ours, &g_theirs);
            grads_match(&context, "dW", &layer.weight.val(), &g_ours, &g_theirs);
            if let Some(b) = &layer.bias {
                grads_match(&context, "db", &b.val(), &g_ours, &g_theirs);
            }
        }
    }
}

/// A weight computed from a parameter (DINO's weight-normalised last layer, `v / ‖v‖` per
/// column, no bias): the kernel's gradient flows back through the computation to `v`.
#[test]
fn a_computed_weight_without_bias_gets_its_gradient_through_the_computation() {
    let device = Device::flex().autodiff();
    device.seed(41);
    let v = Tensor::<2>::random([24, 40], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let x = Tensor::<2>::random([9, 24], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let probe = Tensor::<2>::random([9, 40], Distribution::Normal(0.0, 1.0), &device);
    let normalised = |v: Tensor<2>| {
        let norms = v.clone().square().sum_dim(0).sqrt();
        v / norms
    };
    let ours = linear_input_output(x.clone(), normalised(v.clone()), None);
    let theirs = x.clone().matmul(normalised(v.clone()));
    let g_ours = (ours.clone() * probe.clone()).sum().backward();
    let g_theirs = (theirs.clone() * probe).sum().backward();
    compare("weight-normalised", ours.into_data(), theirs.into_data());
    grads_match("weight-normalised", "dv", &v, &g_ours, &g_theirs);
    grads_match("weight-normalised", "dx", &x, &g_ours, &g_theirs);
}

#[test]
#[should_panic(expected = "linear layer: x [3, 5], weight [4, 6] and bias [4] do not fit")]
fn mismatched_shapes_are_named() {
    let device = Device::flex();
    let x = Tensor::<2>::zeros([3, 5], &device);
    let weight = Tensor::<2>::zeros([4, 6], &device);
    let bias = Tensor::<1>::zeros([4], &device);
    let _ = linear(x, weight, bias);
}
