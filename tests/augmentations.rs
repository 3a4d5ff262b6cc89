//! Each augmentation's effect on real pixels (CIFAR-10 JPEGs in tests/data), and seeding.

mod common;

use image::RgbImage;
use selfsup::augment::{
    AugmentRng, ColorJitter, Crop, GaussianBlur, Normalize, Scale, ViewImage, ViewRecipe,
    ViewTransform, blur::gaussian_blur, color_jitter, crop::resample, flip::flip_horizontal,
    grayscale::to_grayscale, solarize::solarize,
};
use selfsup::data::read_image;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

fn real_image(class: &str, file: &str) -> RgbImage {
    read_image(std::path::Path::new(&format!("{SAMPLE}/{class}/{file}"))).unwrap()
}

fn real_view() -> ViewImage {
    ViewImage::from_rgb8(&real_image("frog", "0000.jpg"))
}

/// A recipe that does nothing but the given crop (identity normalisation).
fn bare(crop: Crop) -> ViewRecipe {
    ViewRecipe {
        crop,
        horizontal_flip: 0.0,
        color_jitter: None,
        grayscale: 0.0,
        blur: None,
        solarize: 0.0,
        normalize: Normalize::IDENTITY,
        allow_upscaling: false,
    }
}

#[test]
fn flip_mirrors_every_row() {
    let original = real_view();
    let mut flipped = original.clone();
    flip_horizontal(&mut flipped);
    assert_ne!(flipped, original);
    for y in 0..original.height {
        for x in 0..original.width {
            assert_eq!(
                flipped.pixel(x, y),
                original.pixel(original.width - 1 - x, y)
            );
        }
    }
    flip_horizontal(&mut flipped);
    assert_eq!(flipped, original);
}

#[test]
fn grayscale_gives_equal_channels_with_the_luma() {
    let original = real_view();
    let mut gray = original.clone();
    to_grayscale(&mut gray);
    for y in 0..gray.height {
        for x in 0..gray.width {
            let [r, g, b] = gray.pixel(x, y);
            assert_eq!(r, g);
            assert_eq!(g, b);
            let [or, og, ob] = original.pixel(x, y);
            assert!((r - (0.2989 * or + 0.587 * og + 0.114 * ob)).abs() < 1e-6);
        }
    }
}

#[test]
fn solarize_inverts_values_at_or_above_the_threshold_only() {
    let original = real_view();
    let mut s = original.clone();
    solarize(&mut s, 0.5);
    let mut inverted = 0;
    for (&o, &v) in original.data.iter().zip(&s.data) {
        if o >= 0.5 {
            assert_eq!(v, 1.0 - o);
            inverted += 1;
        } else {
            assert_eq!(v, o);
        }
    }
    assert!(inverted > 0 && inverted < original.data.len());
}

#[test]
fn random_resized_crop_stays_within_area_and_aspect_ranges() {
    let (w, h) = (500usize, 375usize);
    let crop = Crop::RandomResized {
        size: 224,
        scale: (0.08, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
    let mut rng = AugmentRng::new(7);
    let (mut min_area, mut max_area) = (f64::MAX, 0.0f64);
    for _ in 0..4000 {
        let b = crop.sample_box(w, h, &mut rng);
        assert!(b.x >= 0.0 && b.y >= 0.0);
        assert!(b.x + b.width <= w as f64 && b.y + b.height <= h as f64);
        assert_eq!(b.x.fract(), 0.0);
        let area = b.width * b.height / (w * h) as f64;
        // Rounding the side lengths moves the area and ratio by at most half a pixel per side.
        let slack_w = 0.5 / b.width;
        let slack_h = 0.5 / b.height;
        assert!(
            area >= 0.08 * (1.0 - slack_w) * (1.0 - slack_h) - 1e-12,
            "area {area}"
        );
        assert!(area <= 1.0);
        let ratio = b.width / b.height;
        assert!(
            ratio >= 0.75 * (1.0 - slack_w) / (1.0 + slack_h) - 1e-12,
            "ratio {ratio}"
        );
        assert!(
            ratio <= 4.0 / 3.0 * (1.0 + slack_w) / (1.0 - slack_h) + 1e-12,
            "ratio {ratio}"
        );
        min_area = min_area.min(area);
        max_area = max_area.max(area);
    }
    // The draws cover the range.
    assert!(min_area < 0.1 && max_area > 0.9, "{min_area} {max_area}");
}

#[test]
fn full_image_crop_at_the_same_size_is_exact() {
    let image = real_image("ship", "0001.jpg");
    let view = resample(
        &image,
        selfsup::augment::CropBox {
            x: 0.0,
            y: 0.0,
            width: 32.0,
            height: 32.0,
        },
        32,
    );
    let exact = ViewImage::from_rgb8(&image);
    let max_diff = view
        .data
        .iter()
        .zip(&exact.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-6, "{max_diff}");
    // The deterministic centre crop of a 32x32 image at 32 pixels is the image itself.
    let recipe = bare(Crop::Center {
        resize: None,
        size: 32,
    });
    let mut out = vec![0.0; 3 * 32 * 32];
    recipe
        .apply(&image, &mut AugmentRng::new(0), &mut out)
        .unwrap();
    let v = ViewImage::from_rgb8(&image);
    assert!((out[5 * 32 + 7] - v.pixel(7, 5)[0]).abs() < 1e-6);
    assert!((out[1024 + 5 * 32 + 7] - v.pixel(7, 5)[1]).abs() < 1e-6);
    assert!((out[2048 + 31 * 32 + 31] - v.pixel(31, 31)[2]).abs() < 1e-6);
}

#[test]
fn downscaling_is_antialiased_and_keeps_a_constant_image_constant() {
    let constant = RgbImage::from_pixel(64, 48, image::Rgb([200, 100, 50]));
    let mut rng = AugmentRng::new(3);
    let recipe = bare(Crop::RandomResized {
        size: 20,
        scale: (0.08, 1.0),
        ratio: Crop::DEFAULT_RATIO,
    });
    let mut out = vec![0.0; 3 * 20 * 20];
    recipe.apply(&constant, &mut rng, &mut out).unwrap();
    for (c, expect) in [200.0f32, 100.0, 50.0].iter().enumerate() {
        for v in &out[c * 400..(c + 1) * 400] {
            assert!((v - expect / 255.0).abs() < 1e-5, "{v}");
        }
    }
    // A 1-pixel checkerboard halved is uniform gray with the antialiasing filter.
    let checker = RgbImage::from_fn(32, 32, |x, y| {
        let v = if (x + y) % 2 == 0 { 255 } else { 0 };
        image::Rgb([v, v, v])
    });
    let half = resample(
        &checker,
        selfsup::augment::CropBox {
            x: 0.0,
            y: 0.0,
            width: 32.0,
            height: 32.0,
        },
        16,
    );
    for v in &half.data[3 * 17..3 * 30] {
        assert!((v - 0.5).abs() < 0.02, "{v}");
    }
}

#[test]
fn zero_strength_jitter_is_the_identity() {
    let original = real_view();
    let jitter = ColorJitter {
        p: 1.0,
        brightness: 0.0,
        contrast: 0.0,
        saturation: 0.0,
        hue: 0.0,
    };
    let mut view = original.clone();
    jitter.draw(&mut AugmentRng::new(1)).apply(&mut view);
    assert_eq!(view, original);
}

#[test]
fn jitter_operations_do_what_torchvision_does() {
    let original = real_view();
    // Brightness 0 is black; contrast 0 is the mean luma everywhere; saturation 0 is gray.
    let mut dark = original.clone();
    color_jitter::adjust_brightness(&mut dark, 0.0);
    assert!(dark.data.iter().all(|&v| v == 0.0));
    let mut flat = original.clone();
    color_jitter::adjust_contrast(&mut flat, 0.0);
    let mean_luma: f64 = original
        .data
        .chunks_exact(3)
        .map(|p| f64::from(0.2989 * p[0] + 0.587 * p[1] + 0.114 * p[2]))
        .sum::<f64>()
        / 1024.0;
    assert!(
        flat.data
            .iter()
            .all(|&v| (f64::from(v) - mean_luma).abs() < 1e-5)
    );
    let mut desaturated = original.clone();
    color_jitter::adjust_saturation(&mut desaturated, 0.0);
    let mut gray = original.clone();
    to_grayscale(&mut gray);
    for (a, b) in desaturated.data.iter().zip(&gray.data) {
        assert!((a - b).abs() < 1e-6);
    }
    // Two half-turn hue shifts come back to the image; a hue shift keeps gray pixels and
    // each pixel's max and min (value and chroma).
    let mut hue = original.clone();
    color_jitter::adjust_hue(&mut hue, 0.5);
    assert_ne!(hue, original);
    for (a, b) in hue.data.chunks_exact(3).zip(original.data.chunks_exact(3)) {
        let (amax, bmax) = (a[0].max(a[1]).max(a[2]), b[0].max(b[1]).max(b[2]));
        let (amin, bmin) = (a[0].min(a[1]).min(a[2]), b[0].min(b[1]).min(b[2]));
        assert!((amax - bmax).abs() < 1e-5 && (amin - bmin).abs() < 1e-5);
    }
    color_jitter::adjust_hue(&mut hue, 0.5);
    for (a, b) in hue.data.iter().zip(&original.data) {
        assert!((a - b).abs() < 1e-5);
    }
    // A hue shift of 1/3 turn maps pure red to pure green.
    let mut red = ViewImage::filled(2, 2, [1.0, 0.0, 0.0]);
    color_jitter::adjust_hue(&mut red, 1.0 / 3.0);
    let [r, g, b] = red.pixel(1, 1);
    assert!(r.abs() < 1e-5 && (g - 1.0).abs() < 1e-5 && b.abs() < 1e-5);
}

#[test]
fn jitter_factors_stay_in_their_ranges_and_the_order_varies() {
    let jitter = ColorJitter {
        p: 1.0,
        brightness: 0.4,
        contrast: 0.4,
        saturation: 0.2,
        hue: 0.1,
    };
    let mut rng = AugmentRng::new(11);
    let mut first_ops = std::collections::HashSet::new();
    for _ in 0..200 {
        let draw = jitter.draw(&mut rng);
        assert_eq!(draw.ops.len(), 4);
        first_ops.insert(format!("{:?}", draw.ops[0].0));
        for (op, f) in draw.ops {
            let (lo, hi) = match op {
                color_jitter::JitterOp::Brightness | color_jitter::JitterOp::Contrast => (0.6, 1.4),
                color_jitter::JitterOp::Saturation => (0.8, 1.2),
                color_jitter::JitterOp::Hue => (-0.1, 0.1),
            };
            assert!(f >= lo && f <= hi, "{op:?} {f}");
        }
    }
    assert_eq!(first_ops.len(), 4);
}

#[test]
fn blur_preserves_a_constant_image_and_the_mean() {
    let mut constant = ViewImage::filled(17, 13, [0.25, 0.5, 0.75]);
    gaussian_blur(&mut constant, 1.7, 6);
    for px in constant.data.chunks_exact(3) {
        assert!((px[0] - 0.25).abs() < 1e-6);
        assert!((px[1] - 0.5).abs() < 1e-6);
        assert!((px[2] - 0.75).abs() < 1e-6);
    }
    let original = real_view();
    let mut blurred = original.clone();
    GaussianBlur {
        p: 1.0,
        sigma: (0.1, 2.0),
        kernel_size: None,
    }
    .apply(&mut blurred, 2.0);
    // Smoother: neighbouring pixels differ less; the mean moves little (reflect padding).
    let roughness = |im: &ViewImage| -> f32 {
        im.data
            .windows(4)
            .step_by(3)
            .map(|w| (w[3] - w[0]).abs())
            .sum()
    };
    assert!(roughness(&blurred) < 0.6 * roughness(&original));
    let (a, b) = (blurred.channel_means(), original.channel_means());
    for c in 0..3 {
        assert!((a[c] - b[c]).abs() < 0.01, "{a:?} {b:?}");
    }
}

#[test]
fn same_seed_gives_identical_views_and_another_seed_different_ones() {
    let image = real_image("cat", "0000.jpg");
    let transform = ViewTransform::byol(Scale::Cifar);
    let run = |key: [u64; 3]| {
        let mut a = vec![0.0f32; 3 * 32 * 32];
        let mut b = vec![0.0f32; 3 * 32 * 32];
        transform.apply(&image, key, &mut [&mut a, &mut b]).unwrap();
        (a, b)
    };
    let first = run([1, 0, 5]);
    assert_eq!(first, run([1, 0, 5]));
    assert_ne!(first.0, first.1, "the two views differ");
    assert_ne!(first, run([2, 0, 5]), "another seed");
    assert_ne!(first, run([1, 1, 5]), "another epoch");
}

/// The crop, jitter and blur run compiled for the widest vector instructions the CPU has; with
/// no fused multiply-adds in them, every instruction set gives the same views, bit for bit.
#[test]
fn views_are_identical_on_every_instruction_set() {
    use selfsup::kernels::{InstructionSet, limit_instruction_set};
    let image = real_image("ship", "0000.jpg");
    let transform = ViewTransform::byol(Scale::Cifar);
    let views = || {
        (0..24u64)
            .map(|seed| {
                let mut a = vec![0.0f32; 3 * 32 * 32];
                let mut b = vec![0.0f32; 3 * 32 * 32];
                transform
                    .apply(&image, [seed, 0, 3], &mut [&mut a, &mut b])
                    .unwrap();
                [a, b]
            })
            .collect::<Vec<_>>()
    };
    let mut results = Vec::new();
    for limit in [
        Some(InstructionSet::Portable),
        Some(InstructionSet::Avx2),
        None,
    ] {
        limit_instruction_set(limit);
        results.push(views());
    }
    limit_instruction_set(None);
    assert!(results.windows(2).all(|pair| pair[0] == pair[1]));
}

#[test]
fn presets_have_the_papers_structure() {
    let byol = ViewTransform::byol(Scale::Full(224));
    byol.validate().unwrap();
    let recipes: Vec<_> = byol.recipes().collect();
    assert_eq!(recipes.len(), 2);
    assert_eq!(recipes[0].blur.unwrap().p, 1.0);
    assert_eq!(recipes[1].blur.unwrap().p, 0.1);
    assert_eq!((recipes[0].solarize, recipes[1].solarize), (0.0, 0.2));
    let cifar = ViewTransform::byol(Scale::Cifar);
    assert!(cifar.recipes().all(|r| r.blur.is_none() && r.size() == 32));
    let swav = ViewTransform::swav(Scale::Full(224), 6);
    swav.validate().unwrap();
    assert_eq!(swav.num_views(), 8);
    assert_eq!(swav.num_global(), 2);
    assert_eq!(swav.view_sizes(), vec![224, 224, 96, 96, 96, 96, 96, 96]);
    let dino = ViewTransform::dino(Scale::Cifar, 4);
    assert_eq!(dino.view_sizes(), vec![32, 32, 16, 16, 16, 16]);
    for t in [
        ViewTransform::simsiam(Scale::Cifar),
        ViewTransform::simclr(Scale::Full(224)),
        ViewTransform::vicreg(Scale::Cifar),
        ViewTransform::eval(Some(256), 224),
    ] {
        t.validate().unwrap();
    }
}

#[test]
fn invalid_parameters_are_named() {
    let mut t = ViewTransform::byol(Scale::Cifar);
    t.groups[1].recipe.grayscale = 1.5;
    let e = t.validate().unwrap_err().to_string();
    assert!(
        e.contains("views.groups[1].grayscale") && e.contains("1.5"),
        "{e}"
    );
    let mut t = ViewTransform::byol(Scale::Cifar);
    t.groups[0].recipe.crop = Crop::RandomResized {
        size: 32,
        scale: (0.5, 0.2),
        ratio: Crop::DEFAULT_RATIO,
    };
    let e = t.validate().unwrap_err().to_string();
    assert!(e.contains("crop.scale"), "{e}");
    let mut t = ViewTransform::byol(Scale::Cifar);
    t.groups[0].recipe.color_jitter.as_mut().unwrap().hue = 0.7;
    assert!(t.validate().unwrap_err().to_string().contains("hue"));
}

#[test]
fn an_image_smaller_than_the_view_is_an_error_unless_upscaling_is_allowed() {
    let image = real_image("dog", "0000.jpg");
    let mut t = ViewTransform::byol(Scale::Full(224));
    let e = t
        .check_source_size(image.width(), image.height(), || "dog/0000.jpg".into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dog/0000.jpg") && e.contains("32x32") && e.contains("224"),
        "{e}"
    );
    for g in &mut t.groups {
        g.recipe.allow_upscaling = true;
    }
    t.check_source_size(32, 32, || unreachable!()).unwrap();
}

/// Deterministic pseudo-random values in `[0, 1)` for reference comparisons.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    common::random_values(n, seed)
        .into_iter()
        .map(|v| 0.5 * (v + 1.0))
        .collect()
}

/// torchvision's `_rgb2hsv` then `_hsv2rgb` with the hue moved by `shift`, per pixel in f64,
/// with the hexcone sector chosen by `match` as torchvision writes it.
fn hue_reference(px: [f32; 3], shift: f32) -> [f64; 3] {
    let [r, g, b] = px.map(f64::from);
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    if cr == 0.0 {
        return [r, g, b];
    }
    let s = cr / maxc;
    let (rc, gc, bc) = ((maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = (h / 6.0 + 1.0 + f64::from(shift)).rem_euclid(1.0);
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (maxc * (1.0 - s)).clamp(0.0, 1.0);
    let q = (maxc * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (maxc * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i64).rem_euclid(6) {
        0 => [maxc, t, p],
        1 => [q, maxc, p],
        2 => [p, maxc, t],
        3 => [p, q, maxc],
        4 => [t, p, maxc],
        _ => [maxc, p, q],
    }
}

#[test]
fn hue_rotation_equals_torchvisions_hsv_round_trip() {
    // Real pixels, random pixels, and the ties and extremes the sector choice depends on;
    // 1001 pixels, so the last ones take the path for a partial block.
    let mut pixels: Vec<[f32; 3]> = real_view()
        .data
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    pixels.extend(
        noise(3 * 1001, 3)
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]]),
    );
    pixels.extend([
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.3, 0.3, 0.3],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.5, 0.5, 0.1],
        [0.1, 0.5, 0.5],
        [0.5, 0.1, 0.5],
        [0.9, 0.2, 0.2],
    ]);
    for shift in [-0.5, -0.37, -0.1, 0.0, 0.05, 1.0 / 3.0, 0.5] {
        let mut image = ViewImage {
            width: pixels.len(),
            height: 1,
            data: pixels.iter().flatten().copied().collect(),
        };
        color_jitter::adjust_hue(&mut image, shift);
        for (px, got) in pixels.iter().zip(image.data.chunks_exact(3)) {
            let want = hue_reference(*px, shift);
            for c in 0..3 {
                let err = (f64::from(got[c]) - want[c]).abs();
                assert!(
                    err <= 1e-5,
                    "shift {shift}, pixel {px:?}: {got:?} vs {want:?}"
                );
            }
        }
    }
}

/// The blur as a direct 2-D sum over the `(2r+1)^2` window with reflect padding, in f64.
fn blur_reference(image: &ViewImage, sigma: f32, radius: usize) -> Vec<f64> {
    let (w, h) = (image.width, image.height);
    let r = radius.min(w.max(h) - 1) as i64;
    let weights: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x as f64 / f64::from(sigma)).powi(2)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let reflect = |i: i64, n: usize| -> usize {
        let n = n as i64;
        if n == 1 {
            return 0;
        }
        let m = i.rem_euclid(2 * (n - 1));
        (if m < n { m } else { 2 * (n - 1) - m }) as usize
    };
    let mut out = vec![0.0f64; image.data.len()];
    for y in 0..h {
        for x in 0..w {
            for dy in -r..=r {
                for dx in -r..=r {
                    let weight =
                        weights[(dy + r) as usize] * weights[(dx + r) as usize] / (total * total);
                    let sy = reflect(y as i64 + dy, h);
                    let sx = reflect(x as i64 + dx, w);
                    for c in 0..3 {
                        out[(y * w + x) * 3 + c] +=
                            weight * f64::from(image.data[(sy * w + sx) * 3 + c]);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn blur_equals_the_direct_2d_sum_with_reflect_padding() {
    // Odd sizes, a radius beyond the image (clamped), one-pixel-wide images, the real image.
    let cases = [
        (17, 13, 1.7, 6),
        (5, 3, 2.0, 6),
        (1, 9, 1.0, 3),
        (9, 1, 0.6, 2),
        (32, 32, 2.0, 6),
    ];
    for (case, &(w, h, sigma, radius)) in cases.iter().enumerate() {
        let image = if (w, h) == (32, 32) {
            real_view()
        } else {
            ViewImage {
                width: w,
                height: h,
                data: noise(3 * w * h, case as u64),
            }
        };
        let want = blur_reference(&image, sigma, radius);
        let mut got = image.clone();
        gaussian_blur(&mut got, sigma, radius);
        for (i, (&g, &e)) in got.data.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                "{w}x{h} sigma {sigma} radius {radius}, value {i}: {g} vs {e}"
            );
        }
    }
}
