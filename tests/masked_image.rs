//! Masked-image methods: MAE's loss against the reference formula, the masks (counts, ranges,
//! disjointness, determinism across loader threads), and an encoder that never sees the masked
//! patches.

mod common;

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use common::*;
use selfsup::augment::{HostMasks, Masking, Scale, ViewTransform};
use selfsup::backbone::VitConfig;
use selfsup::data::{ImageFolder, LoaderConfig, ViewLoader};
use selfsup::method::mae::{patchify, unpatchify};
use selfsup::method::{Requirements, TokenInput, mae_loss};
use selfsup::model::{JointEmbeddingConfig, ProjectionHeadConfig};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

#[test]
fn mae_loss_and_gradient_match_the_reference_formula() {
    let f = fixture("mae.json");
    let d = device();
    let pred = leaf::<3>(&f["pred"], &d);
    let target = tensor::<3>(&f["target_patches"], &d);
    let mask = tensor::<2>(&f["mask"], &d);
    let loss = mae_loss(pred.clone(), target, mask, true).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_pred", &pred.grad(&grads).unwrap(), &f["grad_pred"]);
}

#[test]
fn patchify_and_unpatchify_are_inverse_and_follow_maes_order() {
    let d = plain_device();
    let images = random::<4>([2, 3, 8, 8], 1, &d);
    let patches = patchify(images.clone(), 4).unwrap();
    assert_eq!(patches.dims(), [2, 4, 48]);
    // Patch 1 is rows 0-3, columns 4-7; its first values are pixel (0, 4) in R, G, B.
    let p = values(&patches);
    let x = values(&images);
    let pixel = |c: usize, r: usize, col: usize| x[c * 64 + r * 8 + col];
    assert_eq!(
        &p[48..51],
        &[pixel(0, 0, 4), pixel(1, 0, 4), pixel(2, 0, 4)]
    );
    assert_eq!(values(&unpatchify(patches, 4, 3, 2)), x);
    assert!(patchify(images, 3).is_err());
}

fn check_random(masks: &HostMasks, batch: usize) {
    let n = masks.grid * masks.grid;
    assert_eq!(masks.keep_count, n / 4, "75% masked");
    for i in 0..batch {
        let keep = &masks.keep[i * masks.keep_count..(i + 1) * masks.keep_count];
        let masked = &masks.targets[0][i * masks.target_count..(i + 1) * masks.target_count];
        let mut all: Vec<i64> = keep.iter().chain(masked).copied().collect();
        all.sort();
        assert_eq!(
            all,
            (0..n as i64).collect::<Vec<_>>(),
            "kept and masked partition"
        );
        let restore = &masks.restore[i * n..(i + 1) * n];
        for (position, &patch) in keep.iter().chain(masked).enumerate() {
            assert_eq!(restore[patch as usize], position as i64);
        }
    }
}

#[test]
fn random_masks_partition_the_patches_and_repeat_from_the_seed() {
    let masking = Masking::mae(4);
    let a = masking.draw(32, 8, [1, 2, 3]);
    check_random(&a, 8);
    assert_eq!(a, masking.draw(32, 8, [1, 2, 3]));
    assert_ne!(a.keep, masking.draw(32, 8, [1, 2, 4]).keep);
}

#[test]
fn multi_block_masks_stay_in_their_ranges_and_keep_context_and_targets_apart() {
    let masking = Masking::ijepa(2);
    let mut sizes = std::collections::BTreeSet::new();
    for draw in 0..200u64 {
        let m = masking.draw(32, 4, [7, draw, 0]);
        let grid = m.grid;
        assert_eq!(grid, 16);
        assert_eq!(m.targets.len(), 4);
        // One block size per batch, from the reference collator's rule: one uniform u sets the
        // area floor((0.15 + 0.05 u) 256) and the aspect 0.75 + 0.75 u, sides rounded. Over u in
        // [0, 1] that gives exactly these (height, width) on the 16 x 16 grid; a tall small
        // block (7 x 5) or a wide large one (6 x 8) would mean the two were drawn apart.
        const SIZES: [(usize, usize); 6] = [(5, 7), (6, 6), (6, 7), (7, 6), (8, 6), (9, 6)];
        for image in 0..4 {
            let keep = &m.keep[image * m.keep_count..(image + 1) * m.keep_count];
            assert!(m.keep_count >= 10);
            for set in &m.targets {
                let block = &set[image * m.target_count..(image + 1) * m.target_count];
                assert!(
                    block.iter().all(|p| !keep.contains(p)),
                    "context overlaps a target"
                );
                // A rectangle: rows x columns of the block equals its count.
                let r: std::collections::BTreeSet<_> = block.iter().map(|p| p / 16).collect();
                let c: std::collections::BTreeSet<_> = block.iter().map(|p| p % 16).collect();
                assert_eq!(r.len() * c.len(), m.target_count);
                let size = (r.len(), c.len());
                assert!(SIZES.contains(&size), "a {size:?} block");
                sizes.insert(size);
            }
            // The context block is (grid - 1) patches square (scale 0.85-1 gives sides of 15
            // or 16, capped at 15): what it keeps fits in one 15 x 15 window.
            let span = |f: &dyn Fn(i64) -> i64| {
                let v: Vec<i64> = keep.iter().map(|&p| f(p)).collect();
                v.iter().max().unwrap() - v.iter().min().unwrap() + 1
            };
            assert!(span(&|p| p / 16) <= 15 && span(&|p| p % 16) <= 15);
        }
    }
    assert!(sizes.len() >= 5, "block sizes drawn: {sizes:?}");
}

#[test]
fn loader_masks_are_the_same_with_one_or_three_threads() {
    let data = Arc::new(ImageFolder::open(SAMPLE).unwrap());
    let views =
        ViewTransform::masked_image(Scale::Cifar, (0.2, 1.0)).with_masking(Masking::ijepa(4));
    let masks = |workers: usize| {
        let config = LoaderConfig {
            batch_size: 4,
            shuffle: true,
            seed: 3,
            drop_last: true,
            workers,
            prefetch: 0,
        };
        let loader = ViewLoader::new(data.clone(), views.clone(), config, &plain_device()).unwrap();
        let mut batches = loader.epoch(1);
        let mut out = Vec::new();
        while let Some(batch) = batches.next_host() {
            out.push(batch.unwrap().masks.unwrap());
        }
        out
    };
    let one = masks(1);
    assert_eq!(one.len(), 5);
    assert_eq!(one, masks(3));
    assert_ne!(one[0], one[1], "each batch draws its own masks");
}

#[test]
fn the_mae_encoder_never_sees_the_masked_patches() {
    let d = device();
    let vit = VitConfig::new(16, 4, 2, 2, 16, 32).init(&d).unwrap();
    let embedding = JointEmbeddingConfig::new(ProjectionHeadConfig::identity())
        .init(selfsup::backbone::Backbone::Vit(vit))
        .unwrap();
    let masking = Masking::mae(4);
    let host = masking.draw(16, 2, [0, 0, 0]);
    let masks = host.to_device(2, &d);
    let requirements = Requirements {
        tokens: TokenInput::Kept,
        ..Requirements::default()
    };
    let images = random::<4>([2, 3, 16, 16], 1, &d);
    let tokens = |images: Tensor<4>| {
        let e = embedding
            .embed_batch(&[images], 1, &requirements, Some(&masks))
            .unwrap();
        values(&e.tokens.unwrap())
    };
    let before = tokens(images.clone());
    // Overwrite every masked patch of both images with noise.
    let mut pixels = values(&images);
    let noise = values(&random::<4>([2, 3, 16, 16], 2, &d));
    for image in 0..2 {
        for &patch in &host.targets[0][image * host.target_count..(image + 1) * host.target_count] {
            let (r, c) = ((patch / 4) as usize * 4, (patch % 4) as usize * 4);
            for ch in 0..3 {
                for y in r..r + 4 {
                    for x in c..c + 4 {
                        let i = ((image * 3 + ch) * 16 + y) * 16 + x;
                        pixels[i] = noise[i];
                    }
                }
            }
        }
    }
    let data = TensorData::new(pixels.iter().map(|&v| v as f32).collect(), [2, 3, 16, 16]);
    let scribbled = Tensor::<4>::from_data(data, &d);
    let after = tokens(scribbled);
    if std::env::var("SELFSUP_TEST_DEVICE").as_deref() == Ok("wgpu") {
        // On a GPU, autotune may run another kernel for the second call (tuned meanwhile, with
        // other tests running), so the tokens agree to rounding, not to the bit; a masked patch
        // that reached the encoder would move them by the noise's size, about 1.
        assert_close(
            "tokens after scribbling on the masked patches",
            &after,
            &before,
        );
    } else {
        assert_eq!(before, after);
    }
    assert_eq!(before.len(), 2 * (1 + host.keep_count) * 16);
}

#[test]
fn ijepa_loss_and_gradient_match_the_reference_formula() {
    let f = fixture("ijepa.json");
    let d = device();
    let pred = leaf::<3>(&f["pred"], &d);
    let target = leaf::<3>(&f["target"], &d);
    let loss = selfsup::method::ijepa_loss(pred.clone(), target.clone()).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_pred", &pred.grad(&grads).unwrap(), &f["grad_pred"]);
    assert!(
        target.grad(&grads).is_none(),
        "targets are under stop-gradient"
    );
}

/// A tiny I-JEPA model: a 2-block ViT with 4-pixel patches on 16-pixel images.
fn tiny_ijepa(
    d: &burn::tensor::Device,
) -> selfsup::step::SelfSupervised<selfsup::backbone::Backbone> {
    use selfsup::method::{AnyMethodConfig, IjepaConfig, Preset};
    let method = AnyMethodConfig::Ijepa(IjepaConfig {
        predictor_depth: 1,
        predictor_dim: 8,
        predictor_heads: 2,
        ..IjepaConfig::preset(Preset::Cifar)
    });
    let backbone = selfsup::backbone::BackboneConfig::Vit(VitConfig::new(16, 4, 2, 2, 16, 32));
    let config = selfsup::train::PretrainConfig::cifar(method, backbone.clone(), 1);
    d.seed(3);
    let vit = backbone.init(d).unwrap();
    selfsup::train::build_model(&config, vit, 8, d).unwrap()
}

#[test]
fn the_ijepa_target_encoder_gets_no_gradient_and_moves_only_by_ema() {
    let d = device();
    let model = tiny_ijepa(&d);
    let target = model.embedding.target.as_ref().expect("a momentum target");
    assert!(collect(target).trainable.iter().all(|t| !t));
    let before = collect(target);
    let online_before = collect(&model.embedding.online);
    // tau = 1: only the optimiser could move the target.
    let mut stepper = Stepper::sgd(&model, 0.5, 10, 1.0);
    stepper.masks = Some(Masking::ijepa(4).draw(16, 4, [1, 0, 0]).to_device(4, &d));
    let images = random::<4>([4, 3, 16, 16], 9, &d);
    let (model, report) = stepper.step(model, &[images]);
    assert!(report.loss.is_finite() && report.loss > 0.0);
    let after = collect(model.embedding.target.as_ref().unwrap());
    assert_eq!(before.values, after.values, "the target moved without EMA");
    assert_ne!(
        online_before.values,
        collect(&model.embedding.online).values
    );
}

#[test]
fn ijepa_energy_is_the_per_image_prediction_error_whose_mean_is_the_loss() {
    let d = plain_device();
    let model = tiny_ijepa(&d.clone().autodiff()).valid();
    let masks = Masking::ijepa(4).draw(16, 4, [2, 0, 0]).to_device(4, &d);
    let requirements = Requirements {
        momentum_target: true,
        tokens: TokenInput::ContextAndTarget,
        ..Requirements::default()
    };
    let images = random::<4>([4, 3, 16, 16], 4, &d);
    let views = model
        .embedding
        .embed_batch(&[images], 1, &requirements, Some(&masks))
        .unwrap();
    let selfsup::method::AnyMethod::Ijepa(ijepa) = &model.method else {
        panic!("an I-JEPA model");
    };
    let energy = values(&ijepa.energy(&views).unwrap());
    assert_eq!(energy.len(), 4);
    assert!(energy.iter().all(|e| e.is_finite() && *e > 0.0));
    let (p, t) = ijepa.predict(&views).unwrap();
    let loss = values(&selfsup::method::ijepa_loss(p, t).unwrap())[0];
    let mean = energy.iter().sum::<f64>() / 4.0;
    assert!(
        (mean - loss).abs() < 1e-5 * loss.max(1.0),
        "{mean} vs {loss}"
    );
}
