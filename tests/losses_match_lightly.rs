//! Every loss value and its input gradients against lightly's reference values
//! (tests/fixtures, float64 PyTorch), to |a - b| <= 1e-5 + 1e-4 |b|.

mod common;

use burn::tensor::Tensor;
use common::*;
use selfsup::method::dino::dino_center_update;
use selfsup::method::{
    Sigreg, Vicreg, barlow_twins_loss, byol_loss, dino_loss, info_nce, lejepa_loss, ntxent_loss,
    simsiam_loss, sinkhorn, swav_loss,
};

#[test]
fn byol_loss_and_gradients_match_lightly() {
    let f = fixture("byol.json");
    let d = device();
    let (p1, p2) = (leaf::<2>(&f["p1"], &d), leaf::<2>(&f["p2"], &d));
    let (z1, z2) = (leaf::<2>(&f["z1"], &d), leaf::<2>(&f["z2"], &d));
    let loss = byol_loss(&[p1.clone(), p2.clone()], &[z1.clone(), z2.clone()]).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_p1", &p1.grad(&grads).unwrap(), &f["grad_p1"]);
    assert_tensor("grad_p2", &p2.grad(&grads).unwrap(), &f["grad_p2"]);
    // Targets are under stop-gradient.
    assert!(z1.grad(&grads).is_none() && z2.grad(&grads).is_none());
}

#[test]
fn simsiam_loss_and_gradients_match_lightly() {
    let f = fixture("simsiam.json");
    let d = device();
    let (p1, p2) = (leaf::<2>(&f["p1"], &d), leaf::<2>(&f["p2"], &d));
    let (z1, z2) = (leaf::<2>(&f["z1"], &d), leaf::<2>(&f["z2"], &d));
    let loss = simsiam_loss(&[p1.clone(), p2.clone()], &[z1.clone(), z2.clone()]).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_p1", &p1.grad(&grads).unwrap(), &f["grad_p1"]);
    assert_tensor("grad_p2", &p2.grad(&grads).unwrap(), &f["grad_p2"]);
    assert!(z1.grad(&grads).is_none() && z2.grad(&grads).is_none());
}

#[test]
fn barlow_twins_loss_and_gradients_match_lightly() {
    let f = fixture("barlow_twins.json");
    let d = device();
    let (z1, z2) = (leaf::<2>(&f["z1"], &d), leaf::<2>(&f["z2"], &d));
    let lambda = f["lambda"].as_f64().unwrap();
    let loss = barlow_twins_loss(z1.clone(), z2.clone(), lambda).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_z1", &z1.grad(&grads).unwrap(), &f["grad_z1"]);
    assert_tensor("grad_z2", &z2.grad(&grads).unwrap(), &f["grad_z2"]);
}

#[test]
fn vicreg_loss_and_gradients_match_lightly() {
    let f = fixture("vicreg.json");
    let d = device();
    let (z1, z2) = (leaf::<2>(&f["z1"], &d), leaf::<2>(&f["z2"], &d));
    let vicreg = Vicreg {
        lambda_invariance: f["lambda_inv"].as_f64().unwrap(),
        mu_variance: f["mu_var"].as_f64().unwrap(),
        nu_covariance: f["nu_cov"].as_f64().unwrap(),
        eps: f["eps"].as_f64().unwrap(),
    };
    let loss = vicreg.pair_loss(z1.clone(), z2.clone()).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_z1", &z1.grad(&grads).unwrap(), &f["grad_z1"]);
    assert_tensor("grad_z2", &z2.grad(&grads).unwrap(), &f["grad_z2"]);
}

#[test]
fn sinkhorn_codes_match_lightly() {
    let f = fixture("swav.json");
    let d = device();
    let high = tensor::<3>(&f["high_res"], &d);
    let first = high.narrow(0, 0, 1).squeeze_dim::<2>(0);
    let codes = sinkhorn(
        first,
        f["sinkhorn_iterations"].as_u64().unwrap() as usize,
        f["sinkhorn_epsilon"].as_f64().unwrap(),
    );
    assert_tensor("sinkhorn", &codes, &f["sinkhorn_of_high_res_0"]);
}

#[test]
fn swav_loss_and_gradients_match_lightly() {
    let f = fixture("swav.json");
    let d = device();
    let high = leaf::<3>(&f["high_res"], &d);
    let low = leaf::<3>(&f["low_res"], &d);
    let crops = |t: &burn::tensor::Tensor<3>| -> Vec<burn::tensor::Tensor<2>> {
        (0..t.dims()[0])
            .map(|i| t.clone().narrow(0, i, 1).squeeze_dim::<2>(0))
            .collect()
    };
    let loss = swav_loss(
        &crops(&high),
        &crops(&low),
        None,
        f["temperature"].as_f64().unwrap(),
        f["sinkhorn_iterations"].as_u64().unwrap() as usize,
        f["sinkhorn_epsilon"].as_f64().unwrap(),
    )
    .unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor(
        "grad_high_res",
        &high.grad(&grads).unwrap(),
        &f["grad_high_res"],
    );
    assert_tensor(
        "grad_low_res",
        &low.grad(&grads).unwrap(),
        &f["grad_low_res"],
    );
}

#[test]
fn ntxent_loss_and_gradients_match_lightly() {
    let f = fixture("ntxent.json");
    let d = device();
    let (z1, z2) = (leaf::<2>(&f["z1"], &d), leaf::<2>(&f["z2"], &d));
    let loss = ntxent_loss(z1.clone(), z2.clone(), f["temperature"].as_f64().unwrap()).unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_z1", &z1.grad(&grads).unwrap(), &f["grad_z1"]);
    assert_tensor("grad_z2", &z2.grad(&grads).unwrap(), &f["grad_z2"]);
}

/// The views of a `[V, B, D]` tensor.
fn views(t: &Tensor<3>) -> Vec<Tensor<2>> {
    (0..t.dims()[0])
        .map(|i| t.clone().narrow(0, i, 1).squeeze_dim::<2>(0))
        .collect()
}

#[test]
fn dino_loss_gradients_and_centre_match_lightly() {
    let f = fixture("dino.json");
    let d = device();
    let teacher = tensor::<3>(&f["teacher"], &d);
    let student = leaf::<3>(&f["student"], &d);
    let center = tensor::<1>(&f["center_before"], &d).unsqueeze::<2>();
    let loss = dino_loss(
        &views(&teacher),
        &views(&student),
        center.clone(),
        f["teacher_temp"].as_f64().unwrap(),
        f["student_temp"].as_f64().unwrap(),
    )
    .unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor(
        "grad_student",
        &student.grad(&grads).unwrap(),
        &f["grad_student"],
    );
    let after = dino_center_update(
        center,
        &views(&teacher),
        f["center_momentum"].as_f64().unwrap(),
    )
    .unwrap();
    assert_tensor(
        "center_after",
        &after.squeeze_dim::<1>(0),
        &f["center_after"],
    );
}

#[test]
fn moco_info_nce_and_gradient_match_the_formula() {
    let f = fixture("moco.json");
    let d = device();
    let q = leaf::<2>(&f["q"], &d);
    let k = leaf::<2>(&f["k"], &d);
    let queue = leaf::<2>(&f["queue"], &d);
    let loss = info_nce(
        q.clone(),
        k.clone(),
        queue.clone(),
        f["temperature"].as_f64().unwrap(),
    )
    .unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_q", &q.grad(&grads).unwrap(), &f["grad_q"]);
    // Keys and queue are detached.
    assert!(k.grad(&grads).is_none() && queue.grad(&grads).is_none());
}

#[test]
fn sigreg_loss_and_gradient_match_lightly() {
    let f = fixture("sigreg.json");
    let d = device();
    let proj = leaf::<2>(&f["proj"], &d);
    let unit_vectors = tensor::<2>(&f["unit_vectors"], &d);
    let sigreg = Sigreg {
        knots: f["knots"].as_u64().unwrap() as usize,
        t_max: f["t_max"].as_f64().unwrap(),
        num_vectors: unit_vectors.dims()[1],
    };
    let loss = sigreg
        .loss(std::slice::from_ref(&proj), unit_vectors)
        .unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor("grad_proj", &proj.grad(&grads).unwrap(), &f["grad_proj"]);
}

#[test]
fn lejepa_loss_and_gradients_match_lightly() {
    let f = fixture("lejepa.json");
    let d = device();
    let global = leaf::<3>(&f["global_proj"], &d);
    let local = leaf::<3>(&f["local_proj"], &d);
    let unit_vectors = tensor::<2>(&f["unit_vectors"], &d);
    let sigreg = Sigreg {
        knots: f["knots"].as_u64().unwrap() as usize,
        t_max: f["t_max"].as_f64().unwrap(),
        num_vectors: unit_vectors.dims()[1],
    };
    let loss = lejepa_loss(
        &views(&global),
        &views(&local),
        unit_vectors,
        f["lambda"].as_f64().unwrap(),
        &sigreg,
    )
    .unwrap();
    assert_close("loss", &values(&loss), &[f["loss"].as_f64().unwrap()]);
    let grads = loss.backward();
    assert_tensor(
        "grad_global",
        &global.grad(&grads).unwrap(),
        &f["grad_global"],
    );
    assert_tensor("grad_local", &local.grad(&grads).unwrap(), &f["grad_local"]);
}

#[test]
fn sigreg_unit_vectors_are_unit_norm_seeded_and_new_each_step() {
    let d = plain_device();
    let sigreg = Sigreg {
        num_vectors: 32,
        ..Sigreg::default()
    };
    let a = values(&sigreg.unit_vectors(8, 7, 3, &d));
    let again = values(&sigreg.unit_vectors(8, 7, 3, &d));
    let next = values(&sigreg.unit_vectors(8, 7, 4, &d));
    assert_eq!(a, again, "same seed and step, same vectors");
    assert_ne!(a, next, "a new step draws new vectors");
    for m in 0..32 {
        let norm: f64 = (0..8).map(|r| a[r * 32 + m].powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "column {m} has norm {norm}");
    }
    // Standard normal directions: the mean of the squared entries is 1 / D.
    let mean_square = a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64;
    assert!((mean_square - 1.0 / 8.0).abs() < 1e-6);
}
