//! LARS against lightly's two reference steps, and the schedules against their formulas and
//! lightly's EMA schedule.

mod common;

use burn::optim::Optimizer;
use common::*;
use selfsup::optim::{EmaSchedule, LarsConfig, WarmupCosine};

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
