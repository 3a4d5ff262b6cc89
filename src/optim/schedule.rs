//! Learning-rate and EMA schedules as pure functions of the step.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Linear warmup then cosine decay (Goyal et al., 2017; Loshchilov & Hutter, 2017), the
/// schedule of BYOL, SimSiam, Barlow Twins, SwAV and VICReg. Unlike burn's schedulers it
/// accepts any positive base rate (LARS recipes use up to 4.8).
///
/// For step `k` of `K` with `W` warmup steps:
/// - `k < W`: `lr = base (k + 1) / W`;
/// - otherwise: `lr = final + (base - final) (1 + cos(pi (k - W) / (K - W))) / 2`;
/// - `k >= K`: `lr = final`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate, reached at the end of warmup.
    pub base_lr: f64,
    /// Learning rate at the last step.
    pub final_lr: f64,
    /// Linear warmup steps `W`.
    pub warmup_steps: usize,
    /// Total steps `K`.
    pub total_steps: usize,
}

impl WarmupCosine {
    /// A schedule from `base_lr` to 0 over `total_steps`, the first `warmup_steps` linear.
    pub fn new(base_lr: f64, warmup_steps: usize, total_steps: usize) -> Result<Self> {
        let schedule = Self {
            base_lr,
            final_lr: 0.0,
            warmup_steps,
            total_steps,
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// The same schedule ending at `final_lr`.
    pub fn with_final_lr(self, final_lr: f64) -> Result<Self> {
        let schedule = Self { final_lr, ..self };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(Error::invalid_config(
                "lr",
                self.base_lr,
                "a finite value > 0",
            ));
        }
        if !(self.final_lr.is_finite() && self.final_lr >= 0.0 && self.final_lr <= self.base_lr) {
            return Err(Error::invalid_config(
                "final_lr",
                self.final_lr,
                format!("in [0, {}] (the base lr)", self.base_lr),
            ));
        }
        if self.total_steps == 0 {
            return Err(Error::invalid_config("total_steps", 0, "at least 1"));
        }
        if self.warmup_steps > self.total_steps {
            return Err(Error::invalid_config(
                "warmup_steps",
                self.warmup_steps,
                format!("at most total_steps ({})", self.total_steps),
            ));
        }
        Ok(())
    }

    /// Learning rate at step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step >= self.total_steps {
            return self.final_lr;
        }
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.total_steps - self.warmup_steps) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        self.final_lr
            + (self.base_lr - self.final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// A cosine from `start` to `end` over `total_steps`, then `end`:
/// `v_k = end + (start - end) (1 + cos(pi k / K)) / 2` (DINO's `cosine_scheduler` without
/// warmup; its weight-decay schedule 0.04 -> 0.4 and its teacher momentum 0.996 -> 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    /// Value at step 0.
    pub start: f64,
    /// Value at step `K` and after.
    pub end: f64,
    /// Total steps `K`.
    pub total_steps: usize,
}

impl CosineSchedule {
    /// A schedule from `start` to `end` over `total_steps` (at least 1).
    pub fn new(start: f64, end: f64, total_steps: usize) -> Result<Self> {
        for (field, v) in [("start", start), ("end", end)] {
            if !v.is_finite() {
                return Err(Error::invalid_config(field, v, "a finite value"));
            }
        }
        if total_steps == 0 {
            return Err(Error::invalid_config("total_steps", 0, "at least 1"));
        }
        Ok(Self {
            start,
            end,
            total_steps,
        })
    }

    /// The value at `step`.
    pub fn value(&self, step: usize) -> f64 {
        if step >= self.total_steps {
            return self.end;
        }
        let cos = (std::f64::consts::PI * step as f64 / self.total_steps as f64).cos();
        self.end + (self.start - self.end) * (1.0 + cos) / 2.0
    }
}

/// The decay rate of an EMA target: it rises from `tau_base` to `tau_end` along a cosine,
/// `tau_k = tau_end - (tau_end - tau_base) (cos(pi k / K) + 1) / 2`, and stays `tau_end` for
/// `k >= K`. BYOL (Grill et al., 2020, §3.2) and DINO use `tau_end = 1`; MoCo keeps the rate
/// constant (`tau_end = tau_base`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmaSchedule {
    /// `tau_base` (0.996 in BYOL's paper, 0.99 for short runs).
    pub tau_base: f64,
    /// `tau_end` (1 for BYOL and DINO).
    pub tau_end: f64,
    /// Total steps `K`.
    pub total_steps: usize,
}

impl EmaSchedule {
    /// BYOL's schedule from `tau_base` to 1 over `total_steps`.
    pub fn new(tau_base: f64, total_steps: usize) -> Result<Self> {
        Self::between(tau_base, 1.0, total_steps)
    }

    /// A schedule from `tau_base` to `tau_end` over `total_steps`.
    pub fn between(tau_base: f64, tau_end: f64, total_steps: usize) -> Result<Self> {
        for (field, v) in [("tau_base", tau_base), ("tau_end", tau_end)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(Error::invalid_config(field, v, "in [0, 1]"));
            }
        }
        if total_steps == 0 {
            return Err(Error::invalid_config("total_steps", 0, "at least 1"));
        }
        Ok(Self {
            tau_base,
            tau_end,
            total_steps,
        })
    }

    /// `tau_k` at step `step`.
    pub fn tau(&self, step: usize) -> f64 {
        if step >= self.total_steps {
            return self.tau_end;
        }
        let cos = (std::f64::consts::PI * step as f64 / self.total_steps as f64).cos();
        self.tau_end - (self.tau_end - self.tau_base) * (cos + 1.0) / 2.0
    }
}

/// The learning-rate schedule of a run: linear warmup, then cosine decay to `final_lr`
/// ([`WarmupCosine`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrConfig {
    /// Peak learning rate (before batch scaling).
    pub base_lr: f64,
    /// Multiply `base_lr` by `batch_size / 256` (the linear scaling rule of the recipes that
    /// state their rate per 256 images: BYOL, SimCLR, Barlow Twins, VICReg, SwAV, MoCo, DINO).
    pub scale_with_batch: bool,
    /// Epochs of linear warmup from 0 (a shorter run warms up throughout).
    pub warmup_epochs: usize,
    /// Learning rate at the end of the cosine.
    pub final_lr: f64,
}

impl LrConfig {
    /// `base_lr` per 256 images, no warmup, cosine to 0.
    pub fn per_256(base_lr: f64) -> Self {
        Self {
            base_lr,
            scale_with_batch: true,
            warmup_epochs: 0,
            final_lr: 0.0,
        }
    }

    /// The same with `epochs` of warmup.
    pub fn with_warmup(self, epochs: usize) -> Self {
        Self {
            warmup_epochs: epochs,
            ..self
        }
    }

    /// The same ending at `final_lr`.
    pub fn with_final_lr(self, final_lr: f64) -> Self {
        Self { final_lr, ..self }
    }

    /// The peak rate for `batch_size`.
    pub fn peak(&self, batch_size: usize) -> f64 {
        if self.scale_with_batch {
            self.base_lr * batch_size as f64 / 256.0
        } else {
            self.base_lr
        }
    }

    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(Error::invalid_config(
                "lr.base_lr",
                self.base_lr,
                "a finite value > 0",
            ));
        }
        let f = self.final_lr;
        if !(f.is_finite() && f >= 0.0 && f <= self.base_lr) {
            return Err(Error::invalid_config("lr.final_lr", f, "in [0, base_lr]"));
        }
        Ok(())
    }
}

/// The momentum of an EMA target network ([`EmaSchedule`]): from `tau_base` to `tau_end`
/// along a cosine. Ignored by methods without a momentum target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    /// Momentum at the first step.
    pub tau_base: f64,
    /// Momentum at the last step (1 for BYOL and DINO; `tau_base` for MoCo's constant rate).
    pub tau_end: f64,
}

impl EmaConfig {
    /// From `tau_base` to 1 (BYOL, DINO).
    pub fn to_one(tau_base: f64) -> Self {
        Self {
            tau_base,
            tau_end: 1.0,
        }
    }

    /// A constant momentum (MoCo).
    pub fn constant(tau: f64) -> Self {
        Self {
            tau_base: tau,
            tau_end: tau,
        }
    }

    /// Checks the ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("ema.tau_base", self.tau_base),
            ("ema.tau_end", self.tau_end),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(Error::invalid_config(field, v, "in [0, 1]"));
            }
        }
        Ok(())
    }

    /// The schedule over `total_steps`.
    pub fn schedule(&self, total_steps: usize) -> Result<EmaSchedule> {
        EmaSchedule::between(self.tau_base, self.tau_end, total_steps)
    }
}
