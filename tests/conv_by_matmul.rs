//! The convolution lowered to one matrix product over shifted views of the input
//! (`selfsup::conv::conv2d_by_matmul`, the GPU alternative to burn's convolution kernels)
//! against burn's own convolution: forward and the gradients of the input, weight and bias,
//! through burn's autodiff on the CPU, on odd shapes, batch 1, strides, dilation, rectangular
//! kernels and the ResNet layers' geometries.

use std::sync::Mutex;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use selfsup::conv::{
    TapsGeometry, conv2d, conv2d_by_matmul, set_conv_by_matmul, set_fast_conv, uses_fast_kernels,
};

/// The process-wide convolution switches, held by the test that changes them.
static SWITCHES: Mutex<()> = Mutex::new(());

/// `(batch, channels in, height, width, channels out, kernel [h, w], stride, padding, dilation)`.
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 2],
);

const CASES: &[Case] = &[
    // ResNet 3x3 stride 1 and 2, the 1x1 projections, the 7x7 stem.
    (2, 3, 8, 8, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
    (3, 4, 9, 7, 6, [3, 3], [2, 2], [1, 1], [1, 1]),
    (2, 6, 8, 8, 4, [1, 1], [1, 1], [0, 0], [1, 1]),
    (2, 6, 9, 8, 4, [1, 1], [2, 2], [0, 0], [1, 1]),
    (1, 3, 13, 11, 4, [7, 7], [2, 2], [3, 3], [1, 1]),
    // Batch 1, no padding, rectangular kernels and strides, dilation, a stride above the kernel.
    (1, 2, 5, 5, 3, [3, 3], [1, 1], [0, 0], [1, 1]),
    (2, 3, 7, 10, 2, [3, 1], [1, 2], [1, 0], [1, 1]),
    (2, 4, 9, 9, 3, [3, 3], [1, 1], [2, 2], [2, 2]),
    (1, 2, 10, 9, 3, [2, 2], [3, 3], [1, 1], [1, 1]),
];

fn compare(what: &str, case: &Case, actual: TensorData, expected: TensorData) {
    let actual = actual.convert::<f32>().try_to_vec::<f32>().unwrap();
    let expected = expected.convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(actual.len(), expected.len(), "{what} of {case:?}: length");
    for (i, (a, b)) in actual.iter().zip(&expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{what} of {case:?}, element {i}: {a} vs burn's {b}"
        );
    }
}

/// Forward and every gradient of `ours` against burn's convolution on `case`.
fn matches_burn(case: &Case, ours: impl Fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>) {
    let &(batch, cin, h, w, cout, kernel, stride, padding, dilation) = case;
    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([batch, cin, h, w], normal, &device).require_grad();
    let weight =
        Tensor::<4>::random([cout, cin, kernel[0], kernel[1]], normal, &device).require_grad();
    let bias = Tensor::<1>::random([cout], normal, &device).require_grad();
    let theirs = burn_conv2d(
        x.clone(),
        weight.clone(),
        Some(bias.clone()),
        ConvOptions::new(stride, padding, dilation, 1),
    );
    let mine = ours(x.clone(), weight.clone(), bias.clone());
    assert_eq!(mine.dims(), theirs.dims(), "output shape of {case:?}");
    // A random linear functional of the output, so every gradient entry is exercised.
    let probe = Tensor::<4>::random(theirs.dims(), normal, &device);
    let grads_mine = (mine.clone() * probe.clone()).sum().backward();
    let grads_theirs = (theirs.clone() * probe).sum().backward();
    compare("forward", case, mine.into_data(), theirs.into_data());
    let grad = |t: &Tensor<4>, g| t.grad(g).expect("gradient").into_data();
    compare(
        "input grad",
        case,
        grad(&x, &grads_mine),
        grad(&x, &grads_theirs),
    );
    compare(
        "weight grad",
        case,
        grad(&weight, &grads_mine),
        grad(&weight, &grads_theirs),
    );
    compare(
        "bias grad",
        case,
        bias.grad(&grads_mine).expect("bias grad").into_data(),
        bias.grad(&grads_theirs).expect("bias grad").into_data(),
    );
}

#[test]
fn matmul_lowering_matches_burn_conv_forward_and_gradients() {
    for case in CASES {
        let &(.., stride, padding, dilation) = case;
        let geometry = TapsGeometry {
            stride,
            padding,
            dilation,
        };
        matches_burn(case, |x, w, b| {
            conv2d_by_matmul(x, w, Some(b), geometry).expect("valid geometry")
        });
    }
}

#[test]
fn conv_modules_route_to_the_matmul_lowering_when_asked() {
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    set_fast_conv(false);
    set_conv_by_matmul(true);
    for case in CASES {
        let &(_, cin, _, _, cout, kernel, stride, padding, dilation) = case;
        matches_burn(case, |x, w, b| {
            let device = x.device();
            let mut conv = Conv2dConfig::new([cin, cout], kernel)
                .with_stride(stride)
                .with_dilation(dilation)
                .with_padding(PaddingConfig2d::Explicit(
                    padding[0], padding[1], padding[0], padding[1],
                ))
                .init(&device);
            assert!(!uses_fast_kernels(&conv, &x));
            // The module's parameters become the test's tensors, so their gradients are seen.
            conv.weight = burn::module::Param::from_tensor(w);
            conv.bias = Some(burn::module::Param::from_tensor(b));
            conv2d(&conv, x)
        });
    }
    set_conv_by_matmul(false);
    set_fast_conv(true);
}

#[test]
fn bad_geometry_is_an_error_naming_it() {
    let device = Device::flex();
    let x = Tensor::<4>::zeros([1, 2, 4, 4], &device);
    let geometry = TapsGeometry {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
    };
    let too_big = Tensor::<4>::zeros([3, 2, 5, 5], &device);
    let error = conv2d_by_matmul(x.clone(), too_big, None, geometry).unwrap_err();
    assert!(
        error.to_string().contains("kernel 5"),
        "unexpected message: {error}"
    );
    let wrong_channels = Tensor::<4>::zeros([3, 5, 3, 3], &device);
    let error = conv2d_by_matmul(x, wrong_channels, None, geometry).unwrap_err();
    assert!(
        error.to_string().contains("input channels"),
        "unexpected message: {error}"
    );
}
