//! The fast CPU convolution (`selfsup::conv`) against a float64 reference and burn's own conv:
//! forward, input gradient and weight gradient, on fresh random inputs of every shape the
//! backbones use plus odd sizes, batch 1 and channel counts that are not a multiple of the
//! vector width. Tolerance: 1e-4 relative Frobenius error.
#![cfg(feature = "flex")]

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use selfsup::conv::{
    ConvAlgorithm, ConvGeometry, ConvPass, InstructionSet, channels_weight_grad, chosen_algorithm,
    conv2d, conv2d_forward, conv2d_input_grad, conv2d_weight_grad, direct_channels_forward,
    direct_channels_input_grad, direct_forward, direct_weight_grad, limit_instruction_set,
    set_conv_algorithm, supports_channels_weight_grad, supports_direct, supports_direct_channels,
    supports_direct_weight_grad, supports_winograd, uses_fast_kernels, winograd_4x4_forward,
    winograd_forward, winograd_weight_grad,
};

/// `(batch, in_channels, height, width, out_channels, kernel, stride, padding)`.
type Shape = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: &[Shape] = &[
    // ResNet CIFAR stem and basic blocks, reduced sizes.
    (4, 3, 32, 32, 16, 3, 1, 1),
    (3, 16, 16, 16, 16, 3, 1, 1),
    (2, 16, 16, 16, 32, 3, 2, 1),
    (2, 16, 16, 16, 32, 1, 2, 0),
    (5, 24, 8, 8, 40, 1, 1, 0),
    // ImageNet stem 7x7 stride 2 padding 3.
    (2, 3, 29, 31, 8, 7, 2, 3),
    // Odd sizes, batch 1, channels not a multiple of 8 or 16.
    (1, 5, 7, 9, 3, 3, 1, 1),
    (1, 13, 11, 5, 17, 3, 2, 1),
    (1, 7, 9, 9, 11, 1, 2, 0),
    (3, 1, 6, 6, 1, 3, 1, 1),
    // Late stages: tiny maps, many images (groups of images per product).
    (37, 20, 4, 4, 24, 3, 1, 1),
    (9, 33, 3, 3, 19, 3, 2, 1),
    (70, 12, 2, 2, 10, 1, 1, 0),
];

fn geometry(shape: Shape) -> ConvGeometry {
    let (batch, in_channels, in_height, in_width, out_channels, kernel, stride, padding) = shape;
    ConvGeometry {
        batch,
        in_channels,
        in_height,
        in_width,
        out_channels,
        kernel_height: kernel,
        kernel_width: kernel,
        stride: [stride, stride],
        padding: [padding, padding],
    }
}

fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Random input, weights and output gradient for `g`, and the float64 reference of the three
/// passes ([`reference`]).
fn random_case(rng: &mut StdRng, g: &ConvGeometry) -> ([Vec<f32>; 3], [Vec<f64>; 3]) {
    let x = random(rng, g.input_len());
    let w = random(rng, g.weight_len());
    let dy = random(rng, g.output_len());
    let (y, dx, dw) = reference(g, &x, &w, &dy);
    ([x, w, dy], [y, dx, dw])
}

/// Float64 direct convolution: forward, input gradient and weight gradient for output
/// gradient `dy`.
fn reference(g: &ConvGeometry, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow) = (g.out_height(), g.out_width());
    let mut y = vec![0.0f64; g.output_len()];
    let mut dx = vec![0.0f64; g.input_len()];
    let mut dw = vec![0.0f64; g.weight_len()];
    let x_index = |n: usize, c: usize, h: usize, w_: usize| {
        ((n * g.in_channels + c) * g.in_height + h) * g.in_width + w_
    };
    let w_index = |o: usize, c: usize, a: usize, b: usize| {
        ((o * g.in_channels + c) * g.kernel_height + a) * g.kernel_width + b
    };
    for n in 0..g.batch {
        for o in 0..g.out_channels {
            for i in 0..oh {
                for j in 0..ow {
                    let y_index = ((n * g.out_channels + o) * oh + i) * ow + j;
                    let mut sum = 0.0f64;
                    for c in 0..g.in_channels {
                        for a in 0..g.kernel_height {
                            let h = (i * g.stride[0] + a) as isize - g.padding[0] as isize;
                            if h < 0 || h >= g.in_height as isize {
                                continue;
                            }
                            for b in 0..g.kernel_width {
                                let v = (j * g.stride[1] + b) as isize - g.padding[1] as isize;
                                if v < 0 || v >= g.in_width as isize {
                                    continue;
                                }
                                let xi = x_index(n, c, h as usize, v as usize);
                                let wi = w_index(o, c, a, b);
                                sum += x[xi] as f64 * w[wi] as f64;
                                dx[xi] += dy[y_index] as f64 * w[wi] as f64;
                                dw[wi] += dy[y_index] as f64 * x[xi] as f64;
                            }
                        }
                    }
                    y[y_index] = sum;
                }
            }
        }
    }
    (y, dx, dw)
}

fn relative_error(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    let diff: f64 = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (*a as f64 - e).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|e| e * e).sum();
    assert!(norm > 0.0, "reference is all zeros");
    (diff / norm).sqrt()
}

/// Forward, input gradient and weight gradient through the public entry points, into buffers
/// of garbage (every element must be overwritten).
fn all_three(g: &ConvGeometry, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f32>; 3] {
    let mut y = vec![f32::NAN; g.output_len()];
    let mut dx = vec![f32::NAN; g.input_len()];
    let mut dw = vec![f32::NAN; g.weight_len()];
    conv2d_forward(g, x, w, &mut y);
    conv2d_input_grad(g, dy, w, &mut dx);
    conv2d_weight_grad(g, x, dy, &mut dw);
    [y, dx, dw]
}

/// Every variant of the direct kernels this CPU can run: the widest, then capped to AVX2 and to
/// portable code.
const INSTRUCTION_SETS: [Option<InstructionSet>; 3] = [
    None,
    Some(InstructionSet::Avx2),
    Some(InstructionSet::Portable),
];

/// The relative error of a forward `kernel`'s output (into a buffer of garbage) against the
/// float64 reference `y_ref`.
fn forward_error(
    kernel: fn(&ConvGeometry, &[f32], &[f32], &mut [f32]),
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    y_ref: &[f64],
) -> f64 {
    let mut y = vec![f32::NAN; g.output_len()];
    kernel(g, x, w, &mut y);
    relative_error(&y, y_ref)
}

/// [`all_three`] with `algorithm` fixed (where it does not apply, im2col runs), then back to
/// the measured choice. The caller holds [`ALGORITHM`].
fn all_three_fixed(
    algorithm: ConvAlgorithm,
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> [Vec<f32>; 3] {
    set_conv_algorithm(Some(algorithm));
    let outputs = all_three(g, x, w, dy);
    set_conv_algorithm(None);
    outputs
}

/// Each of [`all_three`]'s outputs within 1e-4 relative Frobenius error of its reference.
fn assert_all_close(context: &str, actual: [Vec<f32>; 3], expected: [&Vec<f64>; 3]) {
    let names = ["forward", "input grad", "weight grad"];
    for ((what, actual), expected) in names.iter().zip(&actual).zip(expected) {
        let error = relative_error(actual, expected);
        assert!(
            error < 1e-4,
            "{what} of {context}: relative error {error:e}"
        );
    }
}

#[test]
fn kernels_match_float64_reference_on_every_shape() {
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    for &shape in SHAPES {
        let g = geometry(shape);
        let ([x, w, dy], [y_ref, dx_ref, dw_ref]) = random_case(&mut rng, &g);

        let context = format!("{shape:?} (seed {seed})");
        assert_all_close(
            &context,
            all_three(&g, &x, &w, &dy),
            [&y_ref, &dx_ref, &dw_ref],
        );
    }
}

/// 3x3 stride-1 shapes for Winograd (F(2x2, 3x3), F(4x4, 3x3) and the F(3x3, 2x2) weight
/// gradient): the ones above, odd output sides (cut tiles), padding 0, 2 and 3, a 1 x 1 image,
/// batch 1, and the deep layers it is chosen for (reduced batch).
const WINOGRAD_SHAPES: &[Shape] = &[
    (1, 5, 7, 9, 3, 3, 1, 1),
    (2, 4, 5, 5, 6, 3, 1, 0),
    (2, 3, 6, 7, 5, 3, 1, 2),
    (1, 1, 3, 3, 1, 3, 1, 1),
    (3, 64, 8, 8, 64, 3, 1, 1),
    (2, 96, 4, 4, 128, 3, 1, 1),
    (2, 16, 32, 32, 16, 3, 1, 1),
    // Channels beyond one vector with a tail, odd sides, tiles of one vector from two images
    // (with one thread, where a group holds several images).
    (5, 33, 7, 5, 17, 3, 1, 1),
    (2, 3, 1, 1, 4, 3, 1, 1),
    (1, 2, 5, 4, 3, 3, 1, 3),
];

/// Held by the tests that fix or measure the algorithm or limit the instruction set, which are
/// process-wide state.
static ALGORITHM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Winograd's forward passes and weight gradient (each instruction set, with the default
/// thread pool and with one thread, whose groups hold more images), and the three fixed
/// algorithms through the public entry points (the input gradient of a stride-1 layer is a
/// forward convolution), against the float64 direct convolution at the tolerance of the im2col
/// path.
#[test]
fn winograd_matches_float64_reference() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let shapes = SHAPES.iter().chain(WINOGRAD_SHAPES);
    for &shape in shapes.filter(|&&s| supports_winograd(&geometry(s))) {
        let g = geometry(shape);
        let ([x, w, dy], [y_ref, dx_ref, dw_ref]) = random_case(&mut rng, &g);
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool");
        for threads in ["default", "one"] {
            let check = || {
                for limit in INSTRUCTION_SETS {
                    limit_instruction_set(limit);
                    let context =
                        format!("{shape:?}, {limit:?}, {threads} thread(s) (seed {seed})");
                    let error_2x2 = forward_error(winograd_forward, &g, &x, &w, &y_ref);
                    assert!(
                        error_2x2 < 1e-4,
                        "winograd forward of {context}: {error_2x2:e}"
                    );
                    let error_4x4 = forward_error(winograd_4x4_forward, &g, &x, &w, &y_ref);
                    assert!(
                        error_4x4 < 1e-4,
                        "winograd F(4x4, 3x3) forward of {context}: {error_4x4:e}"
                    );
                    let mut dw = vec![f32::NAN; g.weight_len()];
                    winograd_weight_grad(&g, &x, &dy, &mut dw);
                    let dw_error = relative_error(&dw, &dw_ref);
                    assert!(
                        dw_error < 1e-4,
                        "winograd weight grad of {context}: {dw_error:e}"
                    );
                    // The error bounds BENCHMARKS.md states come from these lines (`--nocapture`).
                    eprintln!(
                        "winograd {context}: forward {error_2x2:.1e} (F(4x4, 3x3) {error_4x4:.1e}), \
                         weight grad {dw_error:.1e}"
                    );
                }
                limit_instruction_set(None);
            };
            if threads == "one" {
                one_thread.install(check);
            } else {
                check();
            }
        }
        let algorithms = [
            ConvAlgorithm::Winograd,
            ConvAlgorithm::Winograd4x4,
            ConvAlgorithm::Im2col,
        ];
        for algorithm in algorithms {
            let outputs = all_three_fixed(algorithm, &g, &x, &w, &dy);
            let context = format!("{algorithm:?}, {shape:?} (seed {seed})");
            assert_all_close(&context, outputs, [&y_ref, &dx_ref, &dw_ref]);
        }
    }
}

/// The direct kernels' forward passes (over pixels and over output channels) and 3x3 weight
/// gradient (each variant the CPU can run: AVX-512, AVX2 + FMA, portable), and the public
/// entry points with them fixed (forward and the stride-1 input gradient by the forward kernel, the weight
/// gradient by its own kernel for 3x3 and im2col otherwise), against the float64 direct
/// convolution, on every stride-1 shape (odd sizes, batch 1, padding 0 to 3, output widths not
/// a multiple of the 8 or 16 lanes, output channels not a multiple of the register tile's 4,
/// 5x5 and padded 1x1 kernels).
#[test]
fn direct_kernel_matches_float64_reference() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    // Kernels other than 3x3 take the kernel's size from the layout instead of unrolled taps;
    // rectangular kernels and paddings catch swapped rows and columns.
    let other_kernels: &[Shape] = &[
        (2, 3, 9, 11, 6, 5, 1, 2),
        (2, 4, 5, 6, 7, 1, 1, 1),
        (1, 3, 4, 5, 5, 3, 1, 3),
    ];
    let rectangular = [
        ([3, 3], [0, 2]),
        ([3, 3], [2, 1]),
        ([3, 5], [0, 2]),
        ([1, 3], [0, 1]),
        ([2, 2], [0, 0]),
        ([5, 2], [2, 1]),
    ]
    .map(|([kh, kw], padding)| ConvGeometry {
        batch: 2,
        in_channels: 3,
        in_height: 7,
        in_width: 10,
        out_channels: 5,
        kernel_height: kh,
        kernel_width: kw,
        stride: [1, 1],
        padding,
    });
    // Output rows of 35 columns: two whole tiles of 16 lanes and a tail (four of 8 and a tail).
    // One output pixel (1x1 input with padding 1, 3x3 input without), and padding 2.
    let wide: &[Shape] = &[
        (2, 6, 35, 35, 9, 3, 1, 1),
        (1, 2, 19, 19, 5, 3, 1, 0),
        (2, 3, 1, 1, 4, 3, 1, 1),
        (1, 5, 3, 3, 2, 3, 1, 0),
        (2, 3, 5, 4, 6, 3, 1, 2),
        // Over channels: 40 outputs (a block of 32 and a tail), 16 and 9 pixels (a tile of 12
        // or 6 and a tail), as in the deep layers it is for.
        (3, 12, 4, 4, 40, 3, 1, 1),
        (2, 9, 3, 3, 33, 3, 1, 1),
    ];
    let square = SHAPES
        .iter()
        .chain(WINOGRAD_SHAPES)
        .chain(other_kernels)
        .chain(wide);
    let geometries = square.map(|&s| geometry(s)).chain(rectangular);
    let (mut tested, mut weight_grads) = (0, 0);
    for g in geometries.filter(supports_direct) {
        let ([x, w, dy], [y_ref, dx_ref, dw_ref]) = random_case(&mut rng, &g);
        for limit in INSTRUCTION_SETS {
            limit_instruction_set(limit);
            let error = forward_error(direct_forward, &g, &x, &w, &y_ref);
            assert!(
                error < 1e-5,
                "direct forward of {g:?}, {limit:?} (seed {seed}): {error:e}"
            );
            let error = forward_error(direct_channels_forward, &g, &x, &w, &y_ref);
            assert!(
                error < 1e-5,
                "direct forward over channels of {g:?}, {limit:?} (seed {seed}): {error:e}"
            );
            if supports_direct_weight_grad(&g) {
                let mut dw = vec![f32::NAN; g.weight_len()];
                direct_weight_grad(&g, &x, &dy, &mut dw);
                let weight_error = relative_error(&dw, &dw_ref);
                assert!(
                    weight_error < 1e-5,
                    "direct weight gradient of {g:?}, {limit:?} (seed {seed}): {weight_error:e}"
                );
                weight_grads += usize::from(limit.is_none());
            }
        }
        limit_instruction_set(None);
        for algorithm in [ConvAlgorithm::Direct, ConvAlgorithm::DirectChannels] {
            let outputs = all_three_fixed(algorithm, &g, &x, &w, &dy);
            let context = format!("{algorithm:?}, {g:?} (seed {seed})");
            assert_all_close(&context, outputs, [&y_ref, &dx_ref, &dw_ref]);
        }
        tested += 1;
    }
    assert!(tested >= 8, "only {tested} stride-1 shapes");
    assert!(weight_grads >= 8, "only {weight_grads} 3x3 stride-1 shapes");
}

/// The direct kernel over output channels on strided layers (3x3 and 1x1 stride 2, the 7x7
/// stride-2 stem; the stride-1 shapes are in the test above), each variant the CPU can run,
/// and the public entry points with it fixed (forward by it; the gradients by im2col), against
/// the float64 direct convolution.
#[test]
fn direct_channels_kernel_matches_float64_reference_on_strided_layers() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    // 40 output channels (a block of 32 and a tail) on a map of 4 x 3 outputs, stride 3; for
    // the input gradient also 40 and 33 input channels, a stride above the kernel (inputs no
    // tap reaches), a 4 x 4 map onto 2 x 2, and a batch that ends in a shorter group.
    let more: &[Shape] = &[
        (3, 6, 12, 9, 40, 3, 3, 1),
        (2, 8, 9, 9, 33, 3, 2, 0),
        (2, 40, 9, 7, 12, 3, 2, 1),
        (3, 33, 8, 8, 16, 1, 3, 0),
        (37, 16, 4, 4, 24, 3, 2, 1),
        (2, 5, 10, 11, 6, 5, 3, 2),
    ];
    let strided = SHAPES
        .iter()
        .chain(more)
        .map(|&s| geometry(s))
        .filter(|g| g.stride != [1, 1] && supports_direct_channels(g));
    let mut tested = 0;
    for g in strided {
        let ([x, w, dy], [y_ref, dx_ref, dw_ref]) = random_case(&mut rng, &g);
        for limit in INSTRUCTION_SETS {
            limit_instruction_set(limit);
            let error = forward_error(direct_channels_forward, &g, &x, &w, &y_ref);
            assert!(
                error < 1e-5,
                "direct forward over channels of {g:?}, {limit:?} (seed {seed}): {error:e}"
            );
            let mut dx = vec![f32::NAN; g.input_len()];
            direct_channels_input_grad(&g, &dy, &w, &mut dx);
            let error = relative_error(&dx, &dx_ref);
            assert!(
                error < 1e-5,
                "input gradient over channels of {g:?}, {limit:?} (seed {seed}): {error:e}"
            );
        }
        limit_instruction_set(None);
        let outputs = all_three_fixed(ConvAlgorithm::DirectChannels, &g, &x, &w, &dy);
        let context = format!("direct over channels, {g:?} (seed {seed})");
        assert_all_close(&context, outputs, [&y_ref, &dx_ref, &dw_ref]);
        tested += 1;
    }
    assert!(tested >= 11, "only {tested} strided shapes");
}

/// The weight gradient over output channels, each variant the CPU can run, against the float64
/// direct convolution: every shape it applies to (stride 1 to 3, 1x1 to 7x7 kernels, padding 0
/// to 3), with input channels in whole tiles and a tail (5, 13, 33), output channels in whole
/// blocks and a tail (40), batch 1, and batches that end in a shorter group of images (37 images
/// of 4 x 4, 512 output pixels per group); then the public entry points with it fixed.
#[test]
fn channels_weight_grad_matches_float64_reference() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let more: &[Shape] = &[
        (3, 12, 4, 4, 40, 3, 1, 1),
        (2, 9, 3, 3, 33, 3, 1, 1),
        (3, 6, 12, 9, 40, 3, 3, 1),
        (2, 8, 9, 9, 33, 3, 2, 0),
        (1, 2, 5, 4, 3, 3, 1, 3),
        (2, 3, 4, 5, 6, 1, 1, 1),
        (33, 16, 4, 4, 16, 3, 1, 1),
    ];
    let shapes = SHAPES
        .iter()
        .chain(WINOGRAD_SHAPES)
        .chain(more)
        .map(|&s| geometry(s))
        .filter(supports_channels_weight_grad);
    let mut tested = 0;
    for g in shapes {
        let ([x, w, dy], [y_ref, dx_ref, dw_ref]) = random_case(&mut rng, &g);
        for limit in INSTRUCTION_SETS {
            limit_instruction_set(limit);
            let mut dw = vec![f32::NAN; g.weight_len()];
            channels_weight_grad(&g, &x, &dy, &mut dw);
            let error = relative_error(&dw, &dw_ref);
            assert!(
                error < 1e-5,
                "weight gradient over channels of {g:?}, {limit:?} (seed {seed}): {error:e}"
            );
        }
        limit_instruction_set(None);
        let outputs = all_three_fixed(ConvAlgorithm::DirectChannels, &g, &x, &w, &dy);
        let context = format!("over channels, {g:?} (seed {seed})");
        assert_all_close(&context, outputs, [&y_ref, &dx_ref, &dw_ref]);
        tested += 1;
    }
    assert!(tested >= 20, "only {tested} shapes");
}

/// One pass of a grouping check: its name, the kernel, the tensor it reads, the float64
/// reference and the length of one image of the tensor read.
type Pass<'a> = (
    &'a str,
    &'a (dyn Fn(&ConvGeometry, &[f32]) -> Vec<f32> + Sync),
    &'a [f32],
    &'a [f64],
    usize,
);

/// The kernel over output channels groups the pixels of several images by the kernel taps
/// that fall inside the image, and skips the others: the result must not depend on how the
/// batch is grouped (images per task follow the batch and the thread count), so each image of
/// a batch computed alone, and the batch with one thread, give the batch's bits exactly. Also
/// a padded 1x1 kernel, whose border outputs read nothing but padding (zero, with no taps). The
/// same for the input gradient over channels of the strided layers.
#[test]
fn direct_channels_results_do_not_depend_on_grouping() {
    // Not while another test limits the instruction set (a different tile, other roundings).
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    // 19 images of 4 x 4 (groups of 8, 8 and 3 with two threads), 8 x 8 strided, 1x1 padded.
    let shapes: &[Shape] = &[
        (19, 12, 4, 4, 40, 3, 1, 1),
        (11, 9, 8, 8, 20, 3, 2, 1),
        (5, 6, 3, 5, 7, 1, 1, 1),
    ];
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for &shape in shapes {
        let g = geometry(shape);
        let ([x, w, dy], [y_ref, dx_ref, _]) = random_case(&mut rng, &g);
        let forward = |g: &ConvGeometry, x: &[f32]| {
            let mut y = vec![f32::NAN; g.output_len()];
            direct_channels_forward(g, x, &w, &mut y);
            y
        };
        let input_grad = |g: &ConvGeometry, dy: &[f32]| {
            let mut dx = vec![f32::NAN; g.input_len()];
            direct_channels_input_grad(g, dy, &w, &mut dx);
            dx
        };
        let single = ConvGeometry { batch: 1, ..g };
        let passes: [Pass; 2] = [
            ("forward", &forward, &x, &y_ref, single.input_len()),
            (
                "input gradient",
                &input_grad,
                &dy,
                &dx_ref,
                single.output_len(),
            ),
        ];
        for (pass, run, source, reference, image_len) in passes {
            let batch = run(&g, source);
            let error = relative_error(&batch, reference);
            assert!(error < 1e-5, "{pass} of {shape:?} (seed {seed}): {error:e}");
            let alone: Vec<f32> = source
                .chunks_exact(image_len)
                .flat_map(|image| run(&single, image))
                .collect();
            let threaded = one_thread.install(|| run(&g, source));
            for (what, other) in [("images alone", &alone), ("one thread", &threaded)] {
                let differing = batch
                    .iter()
                    .zip(other)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differing, 0, "{pass} of {shape:?}, {what} (seed {seed})");
            }
        }
    }
}

/// im2col with cache-sized groups (with up to 2 threads and an L2 cache under 2.25 MiB, one
/// image per product, against up to four by default; with many threads or a larger cache the
/// two group sizes coincide and this checks plain im2col), fixed through the public entry
/// points, against the float64 direct convolution: stride 1 (where the input gradient, a
/// forward convolution, takes them too) and stride 2 (forward and weight gradient).
#[test]
fn im2col_with_cache_sized_groups_matches_float64_reference() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    // 576-long patch rows times 256 output pixels: 147,456 floats per image.
    for shape in [(8, 64, 16, 16, 16, 3, 1, 1), (5, 64, 32, 32, 8, 3, 2, 1)] {
        let g = geometry(shape);
        let ([x, w, dy], [y_ref, dx_ref, dw_ref]) = random_case(&mut rng, &g);
        set_conv_algorithm(Some(ConvAlgorithm::Im2colL2));
        let outputs = all_three(&g, &x, &w, &dy);
        set_conv_algorithm(None);
        let context = format!("im2col, cache-sized groups, {shape:?} (seed {seed})");
        assert_all_close(&context, outputs, [&y_ref, &dx_ref, &dw_ref]);
    }
}

/// The algorithm of a shape is measured once, then fixed: the same inputs take the same path
/// and give bit-identical results, equal to that algorithm's own.
#[test]
fn algorithm_choice_is_deterministic() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = StdRng::seed_from_u64(7);
    // A batch no other test uses, so this test sees the shape's first call (unless a cache
    // file from an earlier run already holds it, which the assertions also cover).
    let g = geometry((11, 32, 8, 8, 48, 3, 1, 1));
    let x = random(&mut rng, g.input_len());
    let w = random(&mut rng, g.weight_len());
    let run = || {
        let mut y = vec![f32::NAN; g.output_len()];
        conv2d_forward(&g, &x, &w, &mut y);
        y
    };
    let first = run();
    let chosen =
        chosen_algorithm(&g, ConvPass::Forward).expect("a measured shape has an algorithm");
    for _ in 0..3 {
        assert!(
            run()
                .iter()
                .zip(&first)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "a rerun of {g:?} differs"
        );
        assert_eq!(chosen_algorithm(&g, ConvPass::Forward), Some(chosen));
    }
    let own = match chosen {
        ConvAlgorithm::Winograd => {
            let mut y = vec![0.0f32; g.output_len()];
            winograd_forward(&g, &x, &w, &mut y);
            y
        }
        ConvAlgorithm::Winograd4x4 => {
            let mut y = vec![0.0f32; g.output_len()];
            winograd_4x4_forward(&g, &x, &w, &mut y);
            y
        }
        ConvAlgorithm::Im2col
        | ConvAlgorithm::Im2colL2
        | ConvAlgorithm::Direct
        | ConvAlgorithm::DirectChannels => {
            set_conv_algorithm(Some(chosen));
            let y = run();
            set_conv_algorithm(None);
            y
        }
    };
    assert!(
        own.iter()
            .zip(&first)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

/// The weight gradient sums over the batch in parallel; its result must not depend on how the
/// work was scheduled, or training runs stop being reproducible. Calls on the same input (many
/// images, so the work is split across threads) must agree to the bit.
#[test]
fn weight_grad_is_bit_for_bit_reproducible() {
    // Not while another test fixes the algorithm halfway through these calls.
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    // 32x32 outputs: one image per task, so the batch is summed from many partial results.
    for shape in [(24, 8, 32, 32, 16, 3, 1, 1), (16, 16, 16, 16, 16, 3, 2, 1)] {
        let g = geometry(shape);
        let x = random(&mut rng, g.input_len());
        let dy = random(&mut rng, g.output_len());
        let grad = || {
            let mut dw = vec![0.0f32; g.weight_len()];
            conv2d_weight_grad(&g, &x, &dy, &mut dw);
            dw
        };
        // Each algorithm fixed in turn (where one does not apply, im2col runs), then measured.
        let algorithms = [
            Some(ConvAlgorithm::Im2col),
            Some(ConvAlgorithm::Im2colL2),
            Some(ConvAlgorithm::Winograd),
            Some(ConvAlgorithm::Direct),
            Some(ConvAlgorithm::DirectChannels),
            None,
        ];
        for algorithm in algorithms {
            set_conv_algorithm(algorithm);
            let first = grad();
            // Calls nested in parallel tasks, so that threads steal each other's work in varying
            // order, as they do when a training step runs other work alongside.
            let runs: Vec<Vec<f32>> = (0..24).into_par_iter().map(|_| grad()).collect();
            for (run, dw) in runs.iter().enumerate() {
                let differing = first
                    .iter()
                    .zip(dw)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differing, 0,
                    "{shape:?} {algorithm:?} (seed {seed}): parallel run {run} differs from the first in {differing} values"
                );
            }
        }
    }
}

/// burn's own conv and ours, both on the flex autodiff device, on the same `Conv2d` module:
/// with the algorithm measured per shape, and with each algorithm fixed (where one does not
/// apply, im2col runs).
#[test]
fn module_forward_and_gradients_match_burn_conv() {
    let _fixed = ALGORITHM.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    let seed: u64 = rand::random();
    device.seed(seed);
    let algorithms = [
        None,
        Some(ConvAlgorithm::Im2col),
        Some(ConvAlgorithm::Im2colL2),
        Some(ConvAlgorithm::Winograd),
        Some(ConvAlgorithm::Winograd4x4),
        Some(ConvAlgorithm::Direct),
        Some(ConvAlgorithm::DirectChannels),
    ];
    for algorithm in algorithms {
        set_conv_algorithm(algorithm);
        module_matches_burn_conv(&device, seed, algorithm);
    }
    set_conv_algorithm(None);
}

fn module_matches_burn_conv(device: &Device, seed: u64, algorithm: Option<ConvAlgorithm>) {
    for &(batch, cin, h, w, cout, kernel, stride, padding) in SHAPES {
        for bias in [false, true] {
            let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .with_bias(bias)
                .init(device);
            let x = Tensor::<4>::random([batch, cin, h, w], Distribution::Normal(0.0, 1.0), device)
                .require_grad();
            assert!(uses_fast_kernels(&conv, &x));
            let ours = conv2d(&conv, x.clone());
            let theirs = burn_conv2d(
                x.clone(),
                conv.weight.val(),
                conv.bias.as_ref().map(|b| b.val()),
                ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
            );
            let shape = theirs.dims();
            assert_eq!(ours.dims(), shape);
            // A random linear functional of the output, so every gradient entry is exercised.
            let probe = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
            let grads_ours = (ours.clone() * probe.clone()).sum().backward();
            let grads_theirs = (theirs.clone() * probe).sum().backward();
            let pairs = [
                ("forward", Some(ours.inner()), Some(theirs.inner())),
                ("input grad", x.grad(&grads_ours), x.grad(&grads_theirs)),
            ];
            let context = format!(
                "{:?} bias {bias}, {algorithm:?} (seed {seed})",
                (batch, cin, h, w, cout, kernel, stride, padding)
            );
            for (what, a, b) in pairs {
                compare(
                    what,
                    &context,
                    a.expect("missing").into_data(),
                    b.expect("missing").into_data(),
                );
            }
            let dw_ours = conv.weight.val().grad(&grads_ours).expect("weight grad");
            let dw_theirs = conv.weight.val().grad(&grads_theirs).expect("weight grad");
            compare(
                "weight grad",
                &context,
                dw_ours.into_data(),
                dw_theirs.into_data(),
            );
            if let Some(b) = &conv.bias {
                let db_ours = b.val().grad(&grads_ours).expect("bias grad");
                let db_theirs = b.val().grad(&grads_theirs).expect("bias grad");
                compare(
                    "bias grad",
                    &context,
                    db_ours.into_data(),
                    db_theirs.into_data(),
                );
            }
        }
    }
}

fn compare(what: &str, context: &str, actual: TensorData, expected: TensorData) {
    let actual = actual.try_to_vec::<f32>().unwrap();
    let expected: Vec<f64> = expected
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let error = relative_error(&actual, &expected);
    assert!(
        error < 1e-4,
        "{what} of {context}: relative error {error:e}"
    );
}

#[test]
fn other_devices_and_uncovered_convolutions_fall_back_to_burn() {
    // Dilation 2 is not covered by the fast kernels: the result must still equal burn's conv.
    let device = Device::flex();
    let conv = Conv2dConfig::new([4, 6], [3, 3])
        .with_dilation([2, 2])
        .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(&device);
    let x = Tensor::<4>::random([2, 4, 9, 9], Distribution::Normal(0.0, 1.0), &device);
    assert!(!uses_fast_kernels(&conv, &x));
    let ours = conv2d(&conv, x.clone());
    let theirs = conv.forward(x);
    compare(
        "dilated forward",
        "fallback",
        ours.into_data(),
        theirs.into_data(),
    );
}
