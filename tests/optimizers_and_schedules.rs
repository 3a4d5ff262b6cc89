//! LARS against lightly's two reference steps, and the schedules against their formulas and
//! lightly's EMA schedule.

mod common;

use burn::optim::Optimizer;
use common::*;
use selfsup::optim::{
    EmaSchedule, GroupedOptimizer, LarsConfig, OptimizerConfig, ParamGroups, WarmupCosine,
};

#[test]
fn lars_two_steps_match_lightly() {
    let f = fixture("lars.json");
    let d = device();
    let lars = LarsConfig::new()
        .with_momentum(f["momentum"].as_f64().unwrap())
        .with_weight_decay(f["weight_decay"].as_f64().unwrap())
        .with_eta(f["eta"].as_f64().unwrap())
        .with_eps(f["eps"].as_f64().unwrap())
        .build()
        .unwrap();
    let lr = f["lr"].as_f64().unwrap();
    let mut w = tensor::<2>(&f["w0"], &d);
    let mut b = tensor::<1>(&f["b0"], &d);
    let (mut w_state, mut b_state) = (None, None);
    for grads in f["grads"].as_array().unwrap() {
        let (w_next, ws) = lars.step(lr, w, tensor::<2>(&grads["w"], &d), w_state);
        let (b_next, bs) = lars.step(lr, b, tensor::<1>(&grads["b"], &d), b_state);
        (w, b, w_state, b_state) = (w_next, b_next, ws, bs);
    }
    assert_tensor("w after 2 steps", &w, &f["w_after_2_steps"]);
    assert_tensor("b after 2 steps", &b, &f["b_after_2_steps"]);
}

#[test]
fn lars_rejects_bad_hyper_parameters() {
    for config in [
        LarsConfig::new().with_momentum(1.5),
        LarsConfig::new().with_weight_decay(-1.0),
        LarsConfig::new().with_eta(0.0),
        LarsConfig::new().with_eta(f64::NAN),
    ] {
        let err = config.build().unwrap_err().to_string();
        assert!(err.contains("lars."), "{err}");
    }
}

#[test]
fn lars_keeps_a_zero_parameter_unadapted() {
    // |w| = 0: no trust ratio, the step is the plain gradient (plus zero weight decay).
    let d = device();
    let lars = LarsConfig::new().build().unwrap();
    let w = burn::tensor::Tensor::<2>::zeros([2, 2], &d);
    let g = burn::tensor::Tensor::<2>::ones([2, 2], &d);
    let (w, _) = lars.step(0.5, w, g, None);
    assert_close("w", &values(&w), &[-0.5; 4]);
}

#[test]
fn ema_schedule_matches_lightly() {
    let f = fixture("byol_tau.json");
    let schedule = EmaSchedule::new(
        f["base"].as_f64().unwrap(),
        f["total_steps"].as_u64().unwrap() as usize,
    )
    .unwrap();
    let steps = f["steps"].as_array().unwrap();
    let expected: Vec<f64> = f["tau"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let actual: Vec<f64> = steps
        .iter()
        .map(|s| schedule.tau(s.as_u64().unwrap() as usize))
        .collect();
    assert_close_tol("tau", &actual, &expected, 1e-12, 1e-12);
}

#[test]
fn warmup_cosine_follows_its_formula() {
    let s = WarmupCosine::new(4.8, 10, 110).unwrap();
    // Linear warmup reaching the base rate at the last warmup step.
    assert!((s.lr(0) - 0.48).abs() < 1e-12);
    assert!((s.lr(9) - 4.8).abs() < 1e-12);
    // Cosine: base at the first decay step, half-way at the middle, final at the end.
    assert!((s.lr(10) - 4.8).abs() < 1e-12);
    assert!((s.lr(60) - 2.4).abs() < 1e-12);
    for k in 10..110 {
        let progress = (k - 10) as f64 / 100.0;
        let expected = 4.8 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        assert!((s.lr(k) - expected).abs() < 1e-12, "step {k}");
    }
    assert_eq!(s.lr(110), 0.0);
    let s = s.with_final_lr(0.01).unwrap();
    assert!((s.lr(109) - 0.01).abs() < 2e-3 && s.lr(200) == 0.01);
}

#[test]
fn schedules_reject_bad_values() {
    assert!(WarmupCosine::new(0.0, 0, 10).is_err());
    assert!(WarmupCosine::new(-1.0, 0, 10).is_err());
    assert!(WarmupCosine::new(1.0, 20, 10).is_err());
    assert!(WarmupCosine::new(1.0, 0, 0).is_err());
    assert!(EmaSchedule::new(1.5, 10).is_err());
    assert!(EmaSchedule::new(0.99, 0).is_err());
    let err = WarmupCosine::new(-0.1, 0, 10).unwrap_err().to_string();
    assert!(err.contains("lr") && err.contains("-0.1"), "{err}");
}

mod groups {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Tensor, TensorData};
    use selfsup::optim::{
        AdamW, CosineSchedule, GroupRule, GroupedOptimizer, OptimizerConfig, ParamGroups,
        WeightDecay, clip_per_parameter,
    };

    use super::common::*;

    fn linear(d: &Device) -> Linear {
        d.seed(3);
        LinearConfig::new(3, 2).init(d)
    }

    /// Gradients of `factor * sum(output)` for a batch of ones.
    fn grads(layer: &Linear, factor: f64, d: &Device) -> GradientsParams {
        let out = layer.forward(Tensor::<2>::ones([1, 3], d));
        GradientsParams::from_grads(out.sum().mul_scalar(factor).backward(), layer)
    }

    #[test]
    fn weight_decay_skips_biases_and_norms() {
        let d = device();
        let layer = linear(&d);
        let (w, b) = (
            values(&layer.weight.val()),
            values(&layer.bias.as_ref().unwrap().val()),
        );
        let groups = ParamGroups::rank_one_excluded(&layer);
        assert_eq!(
            groups.no_weight_decay,
            vec![layer.bias.as_ref().unwrap().id]
        );
        for config in [OptimizerConfig::sgd(0.1), OptimizerConfig::lars(1e-3, 0.1)] {
            let mut optimizer = GroupedOptimizer::new(&config, &groups, 1.0).unwrap();
            // A zero gradient: only weight decay moves anything.
            let stepped = optimizer.step(1.0, 0.1, layer.clone(), grads(&layer, 0.0, &d));
            let expected: Vec<f64> = w.iter().map(|v| v * 0.9).collect();
            if config.kind == selfsup::optim::OptimizerKind::Sgd {
                assert_close("decayed weight", &values(&stepped.weight.val()), &expected);
            }
            assert_eq!(
                values(&stepped.bias.as_ref().unwrap().val()),
                b,
                "{:?} decayed a bias",
                config.kind
            );
        }
    }

    #[test]
    fn a_fixed_rate_group_ignores_the_schedule() {
        let d = device();
        let layer = linear(&d);
        let (w, b) = (
            values(&layer.weight.val()),
            values(&layer.bias.as_ref().unwrap().val()),
        );
        let groups = ParamGroups {
            fixed_lr: vec![layer.weight.id],
            ..ParamGroups::default()
        };
        let config = OptimizerConfig::sgd(0.0);
        let mut optimizer = GroupedOptimizer::new(&config, &groups, 1.0).unwrap();
        // d sum / d w = 1 and d sum / d b = 1; scheduled lr 0.1, fixed 1.0.
        let stepped = optimizer.step(0.1, 0.0, layer.clone(), grads(&layer, 1.0, &d));
        let fixed: Vec<f64> = w.iter().map(|v| v - 1.0).collect();
        let scheduled: Vec<f64> = b.iter().map(|v| v - 0.1).collect();
        assert_close("fixed-rate weight", &values(&stepped.weight.val()), &fixed);
        assert_close(
            "scheduled bias",
            &values(&stepped.bias.as_ref().unwrap().val()),
            &scheduled,
        );
    }

    #[test]
    fn adamw_follows_pytorchs_update() {
        use burn::optim::Optimizer;
        let d = device();
        let adamw = AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            rule: GroupRule::decayed(WeightDecay::new(0.05)),
        };
        let w0 = [0.5f64, -1.0, 2.0];
        let grads = [[0.1f64, -0.3, 0.02], [-0.2, 0.4, 0.01]];
        let lr = 0.01;
        // The reference in f64: PyTorch's AdamW (decoupled decay, bias corrections).
        let (mut w, mut m, mut v) = (w0, [0.0f64; 3], [0.0f64; 3]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..3 {
                w[i] *= 1.0 - lr * 0.05;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8;
                w[i] -= lr / (1.0 - 0.9f64.powi(t)) * m[i] / denom;
            }
        }
        // The autodiff device composes tensor operations; the plain flex device runs the
        // fused kernel.
        for d in [d.clone(), Device::flex()] {
            let to_tensor = |x: &[f64]| {
                let values: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                Tensor::<1>::from_data(TensorData::new(values, [x.len()]), &d)
            };
            let mut tensor = to_tensor(&w0);
            let mut state = None;
            for g in &grads {
                let (next, s) = adamw.step(lr, tensor, to_tensor(g), state);
                (tensor, state) = (next, s);
            }
            assert_close(
                &format!("AdamW after 2 steps on {d:?}"),
                &values(&tensor),
                &w,
            );
        }
    }

    #[test]
    fn gradient_clipping_is_per_parameter() {
        let d = device();
        let layer = linear(&d);
        // Gradients of 2 * sum: every entry 2; weight norm 2 sqrt(6) ~ 4.9, bias 2 sqrt(2) ~ 2.8.
        let mut g = grads(&layer, 2.0, &d);
        clip_per_parameter(&layer, &mut g, 3.0);
        let weight = values(&g.get::<2>(layer.weight.id).unwrap());
        let bias = values(&g.get::<1>(layer.bias.as_ref().unwrap().id).unwrap());
        let scale = 3.0 / (2.0 * 6f64.sqrt() + 1e-6);
        assert_close("clipped weight grad", &weight, &[2.0 * scale; 6]);
        assert_close("unclipped bias grad", &bias, &[2.0, 2.0]);
    }

    #[test]
    fn weight_decay_schedule_is_a_cosine() {
        let s = CosineSchedule::new(0.04, 0.4, 100).unwrap();
        assert!((s.value(0) - 0.04).abs() < 1e-12);
        assert!((s.value(50) - 0.22).abs() < 1e-12);
        assert!((s.value(100) - 0.4).abs() < 1e-12 && s.value(500) == 0.4);
        assert!(CosineSchedule::new(f64::NAN, 0.4, 10).is_err());
        let config = OptimizerConfig::adamw(0.04).with_weight_decay_end(-1.0);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("optimizer.weight_decay_end"), "{err}");
        let err = OptimizerConfig::sgd(0.0)
            .with_gradient_clip(0.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("optimizer.gradient_clip"), "{err}");
    }
}

#[test]
fn layer_wise_decay_scales_each_vit_block_and_exempts_tokens_from_decay() {
    use selfsup::backbone::VitConfig;
    let d = device();
    // 2 blocks: embeddings are layer 0, blocks 1 and 2, the final norm layer 3.
    let vit = VitConfig::new(8, 4, 2, 2, 8, 16).init(&d).unwrap();
    let groups = ParamGroups::rank_one_excluded(&vit).with_layer_decay(&vit, 0.5);
    let scale = |id| {
        groups
            .lr_scales
            .iter()
            .find(|(p, _)| *p == id)
            .map_or(1.0, |(_, s)| *s)
    };
    assert_eq!(scale(vit.conv_proj.weight.id), 0.125);
    assert_eq!(scale(vit.class_token.id), 0.125);
    assert_eq!(scale(vit.encoder.pos_embedding.id), 0.125);
    let block = |i: usize| vit.encoder.layers[i].self_attention.in_proj_weight.id;
    assert_eq!(scale(block(0)), 0.25);
    assert_eq!(scale(block(1)), 0.5);
    assert_eq!(scale(vit.encoder.ln.gamma.id), 1.0);
    // Position embedding and class token take no weight decay; a block's weights do.
    assert!(
        groups
            .no_weight_decay
            .contains(&vit.encoder.pos_embedding.id)
    );
    assert!(groups.no_weight_decay.contains(&vit.class_token.id));
    assert!(!groups.no_weight_decay.contains(&block(0)));

    // One SGD step with unit gradients moves block 0's weights by lr x 0.25.
    let before = values(&vit.encoder.layers[0].self_attention.in_proj_weight.val());
    let loss = vit.forward(random::<4>([2, 3, 8, 8], 1, &d)).sum();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &vit);
    let grad = values(&grads.get::<2>(block(0)).expect("block 0 has a gradient"));
    let mut optimizer = GroupedOptimizer::new(&OptimizerConfig::sgd(0.0), &groups, 0.1).unwrap();
    let stepped = optimizer.step(0.1, 0.0, vit, grads);
    let after = values(
        &stepped.encoder.layers[0]
            .self_attention
            .in_proj_weight
            .val(),
    );
    let expected: Vec<f64> = before
        .iter()
        .zip(&grad)
        .map(|(w, g)| w - 0.1 * 0.25 * g)
        .collect();
    assert_close("block 0 after one step", &after, &expected);
}
