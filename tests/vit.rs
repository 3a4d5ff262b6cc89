//! The Vision Transformer against torchvision: a 2-layer `VisionTransformer`'s state dict
//! loaded by name reproduces torchvision's class-token output; export writes the same names;
//! position embeddings resize for other image sizes; kept-token encoding ignores the rest.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use selfsup::backbone::{BackboneConfig, Encoder, Vit, VitConfig};
use selfsup::export::{NamedTensor, export_safetensors, named_tensors, torchvision_name};
use selfsup::import::{import_safetensors, load_torchvision};

fn fixture_config(f: &serde_json::Value) -> VitConfig {
    let c = &f["config"];
    let get = |k: &str| c[k].as_u64().unwrap() as usize;
    VitConfig::new(
        get("image_size"),
        get("patch_size"),
        get("num_layers"),
        get("num_heads"),
        get("hidden_dim"),
        get("mlp_dim"),
    )
    .with_layer_norm_eps(c["layer_norm_eps"].as_f64().unwrap())
}

fn fixture_state(f: &serde_json::Value) -> Vec<NamedTensor> {
    f["state_dict"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| NamedTensor {
            name: name.clone(),
            shape: t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            values: t["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

fn torchvision_vit() -> (Vit, serde_json::Value) {
    let f = fixture("vit_tiny_torchvision.json");
    let vit = fixture_config(&f).init(&device()).unwrap();
    let vit = load_torchvision(vit, &fixture_state(&f), "fixture").unwrap();
    (vit, f)
}

#[test]
fn vit_with_torchvision_weights_reproduces_torchvisions_output() {
    let (vit, f) = torchvision_vit();
    let input = tensor::<4>(&f["input"], &device());
    assert_tensor("class token", &vit.forward(input), &f["class_token_output"]);
}

#[test]
fn vit_export_writes_torchvisions_names_and_shapes() {
    let f = fixture("vit_tiny_torchvision.json");
    let backbone = BackboneConfig::Vit(fixture_config(&f))
        .init(&device())
        .unwrap();
    let mut ours: Vec<(String, Vec<usize>)> = named_tensors(&backbone)
        .unwrap()
        .into_iter()
        .map(|t| (torchvision_name(&t.name), t.shape))
        .collect();
    let mut theirs: Vec<(String, Vec<usize>)> = fixture_state(&f)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);

    // A round trip through the safetensors file gives the same network.
    let (vit, f) = torchvision_vit();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vit.safetensors");
    export_safetensors(&vit, &path).unwrap();
    let fresh = fixture_config(&f).init(&device()).unwrap();
    let reloaded = import_safetensors(fresh, &path).unwrap();
    let input = tensor::<4>(&f["input"], &device());
    assert_tensor(
        "reloaded",
        &reloaded.forward(input),
        &f["class_token_output"],
    );
}

#[test]
fn loading_a_state_dict_with_a_missing_or_misshapen_tensor_names_it() {
    let f = fixture("vit_tiny_torchvision.json");
    let mut state = fixture_state(&f);
    state.retain(|t| t.name != "encoder.ln.bias");
    let vit = fixture_config(&f).init(&device()).unwrap();
    let err = load_torchvision(vit, &state, "fixture").unwrap_err();
    assert!(err.to_string().contains("encoder.ln.bias"), "{err}");

    let mut state = fixture_state(&f);
    let cls = state.iter_mut().find(|t| t.name == "class_token").unwrap();
    cls.shape = vec![1, 16, 1];
    let vit = fixture_config(&f).init(&device()).unwrap();
    let err = load_torchvision(vit, &state, "fixture").unwrap_err();
    assert!(err.to_string().contains("class_token"), "{err}");
}

#[test]
fn other_image_sizes_resize_the_position_embedding_and_train_it() {
    let (vit, _) = torchvision_vit();
    let d = device();
    // 8 x 8 images: a 2 x 2 patch grid instead of the stored 4 x 4.
    let images = random::<4>([2, 3, 8, 8], 3, &d);
    let tokens = vit.forward_tokens(images.clone());
    assert_eq!(tokens.dims(), [2, 5, 16]);
    let grads = vit.forward(images).sum().backward();
    let pos_grad = vit.encoder.pos_embedding.grad(&grads).unwrap();
    let patch_grad: f64 = values(&pos_grad.narrow(1, 1, 16).abs().sum())[0];
    assert!(
        patch_grad > 0.0,
        "the resized positions must train the stored ones"
    );

    // Resizing a constant grid gives the same constant (bicubic weights sum to 1).
    let positions = vit.patch_positions([4, 4]);
    let constant = positions.ones_like();
    let pos = Tensor::cat(vec![Tensor::zeros([1, 1, 16], &d), constant], 1);
    let mut resized = vit.clone();
    resized.encoder.pos_embedding = resized.encoder.pos_embedding.map(|_| pos.clone());
    assert_close_tol(
        "resized constant",
        &values(&resized.patch_positions([7, 3])),
        &[1.0; 7 * 3 * 16],
        1e-5,
        1e-5,
    );
}

#[test]
fn the_position_resize_is_pytorchs_bicubic_interpolation() {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use selfsup::backbone::bicubic::resize_grid;
    let d = device();
    // PyTorch 2.15: F.interpolate(x.view(1, 1, 3, 3), size=(2, 5), mode="bicubic",
    // align_corners=False) in float64.
    let grid = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0], &d)
        .reshape([3, 3, 1]);
    let pytorch = [
        1.4782187499999992,
        1.8927499999999977,
        2.57421875,
        3.2367031249999987,
        3.6316875000000013,
        6.329781249999996,
        6.686093749999993,
        7.42578125,
        8.583124999999999,
        9.369468750000003,
    ];
    assert_close(
        "bicubic 3x3 -> 2x5",
        &values(&resize_grid(grid, [2, 5])),
        &pytorch,
    );
    // burn's own bicubic op on the ViT's stored 4 x 4 grid, down and up.
    let (vit, _) = torchvision_vit();
    let stored = vit.encoder.pos_embedding.val().narrow(1, 1, 16);
    let square = stored.reshape([1, 4, 4, 16]).permute([0, 3, 1, 2]);
    for grid in [[7, 3], [2, 2], [6, 6], [1, 5]] {
        let options = InterpolateOptions {
            align_corners: false,
            ..InterpolateOptions::new(InterpolateMode::Bicubic)
        }
        .with_output_size(grid);
        let burn = interpolate(square.clone(), options)
            .permute([0, 2, 3, 1])
            .reshape([1, grid[0] * grid[1], 16]);
        assert_close(
            &format!("resize to {grid:?}"),
            &values(&vit.patch_positions(grid)),
            &values(&burn),
        );
    }
}

#[test]
fn kept_token_encoding_never_sees_the_dropped_patches() {
    let (vit, _) = torchvision_vit();
    let d = device();
    let images = random::<4>([1, 3, 16, 16], 5, &d);
    // Keep patches 0, 5, 10 and 15 (the diagonal of the 4 x 4 grid).
    let keep = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 5, 10, 15], [1, 4]), &d);
    let kept = vit.forward_kept(images.clone(), keep.clone()).unwrap();
    assert_eq!(kept.dims(), [1, 5, 16]);
    // Scribble over patch 1 (rows 0-3, columns 4-7): the kept tokens do not change.
    let noise = random::<4>([1, 3, 4, 4], 6, &d);
    let scribbled = images.clone().slice_assign([0..1, 0..3, 0..4, 4..8], noise);
    let again = vit.forward_kept(scribbled.clone(), keep).unwrap();
    assert_close("kept tokens", &values(&again), &values(&kept));
    // ... while the full encoding does change.
    let full = values(&vit.forward_tokens(images));
    let full_scribbled = values(&vit.forward_tokens(scribbled));
    assert!(
        full.iter()
            .zip(&full_scribbled)
            .any(|(a, b)| (a - b).abs() > 1e-4)
    );

    let bad = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 16], [1, 2]), &d);
    let err = vit
        .forward_kept(random::<4>([1, 3, 16, 16], 7, &d), bad)
        .unwrap_err();
    assert!(err.to_string().contains("16"), "{err}");
}

#[test]
fn vit_rejects_images_smaller_than_a_patch() {
    let (vit, _) = torchvision_vit();
    let err = vit.check_images([2, 3, 3, 16]).unwrap_err();
    assert!(err.to_string().contains("patch size 4"), "{err}");
    let err = Encoder::check_images(&vit, [2, 1, 16, 16]).unwrap_err();
    assert!(err.to_string().contains("3 channels"), "{err}");
    assert!(vit.check_images([2, 3, 16, 16]).is_ok());
}

#[test]
fn every_vit_parameter_trains_and_zero_initialised_resnet_scales_too() {
    use selfsup::backbone::{ResNetConfig, trainable_parameters};
    let f = fixture("vit_tiny_torchvision.json");
    let vit = fixture_config(&f).init(&device()).unwrap();
    let torchvision: usize = fixture_state(&f).iter().map(|t| t.values.len()).sum();
    assert_eq!(trainable_parameters(&vit), torchvision);
    // torchvision's `zero_init_residual`: the zeroed scales are parameters like the others.
    let config = ResNetConfig::resnet18().with_width(4);
    let plain = config.init(&device()).unwrap();
    let zeroed = config
        .with_zero_init_residual(true)
        .init(&device())
        .unwrap();
    assert_eq!(trainable_parameters(&zeroed), trainable_parameters(&plain));
}

/// Largest absolute value and standard deviation of a tensor's entries.
fn spread<const D: usize>(t: &Tensor<D>) -> (f64, f64) {
    let v = values(t);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (v.iter().fold(0.0f64, |m, x| m.max(x.abs())), var.sqrt())
}

#[test]
fn blocks_draw_torchvisions_weights_and_the_decoders_draw_maes() {
    use selfsup::model::TokenTransformerShape;
    let d = 128;
    let uniform_std = |bound: f64| bound / 3f64.sqrt();
    let vit = VitConfig::new(32, 4, 2, 2, d, 4 * d)
        .init(&device())
        .unwrap();
    let attention = &vit.encoder.layers[0].self_attention;
    // torchvision's `nn.MultiheadAttention` leaves `out_proj` at `nn.Linear`'s default.
    let (max, std) = spread(&attention.out_proj.weight.val());
    let bound = 1.0 / (d as f64).sqrt();
    assert!(max <= bound, "{max} > {bound}");
    assert!((std / uniform_std(bound) - 1.0).abs() < 0.03, "{std}");
    assert_eq!(spread(&attention.out_proj.bias.val()).0, 0.0);
    let xavier = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f64).sqrt();
    let (max, std) = spread(&attention.in_proj_weight.val());
    assert!(max <= xavier(d, 3 * d));
    assert!(
        (std / uniform_std(xavier(d, 3 * d)) - 1.0).abs() < 0.03,
        "{std}"
    );
    let (max, _) = spread(&vit.encoder.layers[0].mlp.linear_1.bias.val());
    assert!(
        max > 0.0 && max < 1e-5,
        "torchvision's MLP biases are N(0, 1e-6): {max}"
    );
    // MAE's decoder / I-JEPA's predictor: Xavier everywhere, zero biases.
    let decoder = TokenTransformerShape {
        input_dim: d,
        width: d,
        depth: 1,
        heads: 2,
        output_dim: 48,
    }
    .init(&device());
    let block = &decoder.blocks[0];
    let (max, std) = spread(&block.self_attention.out_proj.weight.val());
    assert!(max <= xavier(d, d));
    assert!(
        (std / uniform_std(xavier(d, d)) - 1.0).abs() < 0.03,
        "{std}"
    );
    assert_eq!(spread(&block.mlp.linear_1.bias.val()).0, 0.0);
    assert_eq!(spread(&block.mlp.linear_2.bias.val()).0, 0.0);
}

#[test]
fn presets_pooling_and_the_masked_methods_backbone_check() {
    use selfsup::augment::Masking;
    use selfsup::backbone::VitPool;
    use selfsup::method::{AnyMethodConfig, Preset};
    use selfsup::train::PretrainConfig;
    // The papers' sizes: width, blocks, heads, MLP.
    let shape = |c: VitConfig| (c.hidden_dim, c.num_layers, c.num_heads, c.mlp_dim);
    assert_eq!(shape(VitConfig::tiny(224, 16)), (192, 12, 3, 768));
    assert_eq!(shape(VitConfig::small(224, 16)), (384, 12, 6, 1536));
    assert_eq!(shape(VitConfig::base(224, 16)), (768, 12, 12, 3072));
    let cifar = VitConfig::cifar_tiny();
    assert_eq!((cifar.image_size, cifar.patch_size), (32, 4));
    // Mean pooling: the mean of the patch tokens after the final norm, not the class token.
    let d = device();
    let vit = VitConfig::new(16, 4, 1, 2, 16, 32)
        .with_pool(VitPool::MeanPatch)
        .init(&d)
        .unwrap();
    let images = random::<4>([2, 3, 16, 16], 5, &d);
    let tokens = vit.forward_tokens(images.clone());
    let mean = tokens.clone().narrow(1, 1, 16).mean_dim(1).reshape([2, 16]);
    assert_close("mean pooling", &values(&vit.encode(images)), &values(&mean));
    let cls = tokens.narrow(1, 0, 1).reshape([2, 16]);
    assert!(
        values(&cls)
            .iter()
            .zip(values(&mean))
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
    // Patch masks need patch tokens of the masks' size.
    let mae = AnyMethodConfig::preset("mae", Preset::Cifar).unwrap();
    let convnet = common::tiny_backbone_config();
    let err = PretrainConfig::cifar(mae.clone(), convnet, 1)
        .check()
        .unwrap_err()
        .to_string();
    assert!(err.contains("vision transformer"), "{err}");
    // The CIFAR recipe works on 4-pixel patches; a ViT of 8-pixel patches needs the method's
    // patch size (from which its recipe draws the masks) and the masks' to match.
    let vit = BackboneConfig::Vit(VitConfig::new(32, 8, 1, 2, 16, 32));
    let err = PretrainConfig::cifar(mae.clone(), vit.clone(), 1)
        .check()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("method.patch_size") && err.contains("patch size 8"),
        "{err}"
    );
    let AnyMethodConfig::Mae(mae) = mae else {
        unreachable!("the mae preset is MAE's")
    };
    let mae = AnyMethodConfig::Mae(selfsup::method::mae::MaeConfig {
        patch_size: 8,
        ..mae
    });
    let mut config = PretrainConfig::cifar(mae, vit, 1);
    config.check().unwrap();
    config.views = config.views.with_masking(Masking::mae(4));
    let err = config.check().unwrap_err().to_string();
    assert!(
        err.contains("views.masking.patch_size") && err.contains("patch size 8"),
        "{err}"
    );
}

/// `gather_tokens` and `select_shared_tokens` copy whole rows forward and add every selection's
/// gradient back into its row (repeated indices accumulate), from a non-contiguous input.
#[test]
fn token_selection_copies_rows_and_accumulates_their_gradients() {
    use selfsup::backbone::vit::{gather_tokens, select_shared_tokens};
    let d = device();
    let [b, n, width, k] = [2, 5, 3, 4];
    let wide = random::<3>([b, n + 1, width], 11, &d).require_grad();
    let tokens = wide.clone().narrow(1, 1, n);
    let picks = [[4i64, 0, 4, 2], [1, 1, 3, 0]];
    let indices = Tensor::<2, Int>::from_data(TensorData::new(picks.concat(), [b, k]), &d);
    let probe = random::<3>([b, k, width], 12, &d);
    let gathered = gather_tokens(tokens, indices.clone()).unwrap();
    let grads = (gathered.clone() * probe.clone()).sum().backward();
    let (input, weights) = (values(&wide), values(&probe));
    let mut expected = Vec::new();
    let mut expected_grad = vec![0.0; input.len()];
    for (image, row) in picks.iter().enumerate() {
        for (slot, &token) in row.iter().enumerate() {
            let from = (image * (n + 1) + 1 + token as usize) * width;
            let at = (image * k + slot) * width;
            expected.extend_from_slice(&input[from..from + width]);
            for c in 0..width {
                expected_grad[from + c] += weights[at + c];
            }
        }
    }
    assert_eq!(gathered.dims(), [b, k, width]);
    assert_close("gathered tokens", &values(&gathered), &expected);
    let grad = wide.grad(&grads).unwrap();
    assert_close("gradient of the tokens", &values(&grad), &expected_grad);

    let table = random::<2>([n, width], 13, &d).require_grad();
    let shared = select_shared_tokens(table.clone(), indices).unwrap();
    let grads = (shared.clone() * probe).sum().backward();
    let rows = values(&table);
    let mut expected = Vec::new();
    let mut expected_grad = vec![0.0; rows.len()];
    for (image, row) in picks.iter().enumerate() {
        for (slot, &token) in row.iter().enumerate() {
            let from = token as usize * width;
            let at = (image * k + slot) * width;
            expected.extend_from_slice(&rows[from..from + width]);
            for c in 0..width {
                expected_grad[from + c] += weights[at + c];
            }
        }
    }
    assert_close("shared rows", &values(&shared), &expected);
    assert_close(
        "gradient of the table",
        &values(&table.grad(&grads).unwrap()),
        &expected_grad,
    );

    let bad = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 5], [1, 2]), &d);
    let err = select_shared_tokens(random::<2>([n, width], 14, &d), bad).unwrap_err();
    assert!(err.to_string().contains("in 0..5"), "{err}");
}
