//! The optimiser of a run: kind, weight decay (optionally scheduled), parameter groups and
//! gradient clipping, serialisable for configuration files and checkpoints.

use serde::{Deserialize, Serialize};

use crate::check::ensure;
use crate::error::Result;

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// [SGD](super::Sgd) with heavy-ball momentum.
    Sgd,
    /// [LARS](super::Lars) (You et al. 2017).
    Lars,
    /// [AdamW](super::AdamW) (Loshchilov & Hutter 2019).
    Adamw,
}

fn default_momentum() -> f64 {
    0.9
}
fn default_eta() -> f64 {
    1e-3
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_true() -> bool {
    true
}

/// The optimiser of a run. Fields that do not apply to `kind` are ignored (`momentum` for
/// AdamW, `lars_eta` outside LARS, `adam_betas` outside AdamW).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Heavy-ball momentum of SGD and LARS.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Weight decay at the first step.
    pub weight_decay: f64,
    /// Weight decay at the last step, reached along a cosine (DINO: 0.04 -> 0.4); absent:
    /// constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay_end: Option<f64>,
    /// LARS trust coefficient `eta`.
    #[serde(default = "default_eta")]
    pub lars_eta: f64,
    /// AdamW's `(beta1, beta2)`.
    #[serde(default = "default_betas")]
    pub adam_betas: [f64; 2],
    /// AdamW's denominator `eps`, and LARS's in the trust ratio.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// No weight decay (and no LARS adaptation) for biases and normalisation parameters.
    #[serde(default = "default_true")]
    pub exclude_bias_and_norm: bool,
    /// Train the predictor at the peak learning rate throughout (SimSiam's `--fix-pred-lr`).
    #[serde(default)]
    pub predictor_fixed_lr: bool,
    /// Clip each parameter's gradient to this L2 norm (DINO's `clip_grad`, 3.0); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_clip: Option<f64>,
}

impl OptimizerConfig {
    fn with_kind(kind: OptimizerKind, weight_decay: f64) -> Self {
        Self {
            kind,
            momentum: default_momentum(),
            weight_decay,
            weight_decay_end: None,
            lars_eta: default_eta(),
            adam_betas: default_betas(),
            eps: default_eps(),
            exclude_bias_and_norm: true,
            predictor_fixed_lr: false,
            gradient_clip: None,
        }
    }

    /// SGD with momentum 0.9 and `weight_decay`.
    pub fn sgd(weight_decay: f64) -> Self {
        Self::with_kind(OptimizerKind::Sgd, weight_decay)
    }

    /// LARS with momentum 0.9, trust coefficient `eta` and `weight_decay`.
    pub fn lars(eta: f64, weight_decay: f64) -> Self {
        Self {
            lars_eta: eta,
            ..Self::with_kind(OptimizerKind::Lars, weight_decay)
        }
    }

    /// AdamW with betas (0.9, 0.999), eps 1e-8 and `weight_decay`.
    pub fn adamw(weight_decay: f64) -> Self {
        Self::with_kind(OptimizerKind::Adamw, weight_decay)
    }

    /// lightly's CIFAR-10 benchmark optimiser: SGD, momentum 0.9, weight decay 5e-4.
    pub fn cifar_sgd() -> Self {
        Self::sgd(5e-4)
    }

    /// The same with a weight decay that follows a cosine to `end` over training.
    pub fn with_weight_decay_end(self, end: f64) -> Self {
        Self {
            weight_decay_end: Some(end),
            ..self
        }
    }

    /// The same with per-parameter gradient clipping at `max_norm`.
    pub fn with_gradient_clip(self, max_norm: f64) -> Self {
        Self {
            gradient_clip: Some(max_norm),
            ..self
        }
    }

    /// The same with the predictor at a fixed learning rate.
    pub fn with_predictor_fixed_lr(self) -> Self {
        Self {
            predictor_fixed_lr: true,
            ..self
        }
    }

    /// Checks every field's range, naming the field.
    pub fn validate(&self) -> Result<()> {
        let m = self.momentum;
        ensure(
            "optimizer.momentum",
            m,
            (0.0..1.0).contains(&m),
            "in [0, 1)",
        )?;
        for (field, value) in [
            ("optimizer.weight_decay", Some(self.weight_decay)),
            ("optimizer.weight_decay_end", self.weight_decay_end),
        ] {
            if let Some(v) = value {
                ensure(field, v, v.is_finite() && v >= 0.0, "a finite value >= 0")?;
            }
        }
        let eta = self.lars_eta;
        ensure(
            "optimizer.lars_eta",
            eta,
            eta.is_finite() && eta > 0.0,
            "a finite value > 0",
        )?;
        for (i, b) in self.adam_betas.iter().enumerate() {
            ensure(
                &format!("optimizer.adam_betas[{i}]"),
                *b,
                (0.0..1.0).contains(b),
                "in [0, 1)",
            )?;
        }
        ensure(
            "optimizer.eps",
            self.eps,
            self.eps.is_finite() && self.eps >= 0.0,
            "a finite value >= 0",
        )?;
        if let Some(c) = self.gradient_clip {
            ensure(
                "optimizer.gradient_clip",
                c,
                c.is_finite() && c > 0.0,
                "a finite value > 0 (omit it to turn clipping off)",
            )?;
        }
        Ok(())
    }
}
