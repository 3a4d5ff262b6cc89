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

/// BYOL's target decay rate (Grill et al., 2020, §3.2): it rises from `tau_base` to 1 along a
/// cosine, `tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`, and stays 1 for `k >= K`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmaSchedule {
    /// `tau_base` (0.996 in the paper, 0.99 for short runs).
    pub tau_base: f64,
    /// Total steps `K`.
    pub total_steps: usize,
}

impl EmaSchedule {
    /// A schedule from `tau_base` to 1 over `total_steps`.
    pub fn new(tau_base: f64, total_steps: usize) -> Result<Self> {
        if !(tau_base.is_finite() && (0.0..=1.0).contains(&tau_base)) {
            return Err(Error::invalid_config("tau_base", tau_base, "in [0, 1]"));
        }
        if total_steps == 0 {
            return Err(Error::invalid_config("total_steps", 0, "at least 1"));
        }
        Ok(Self {
            tau_base,
            total_steps,
        })
    }

    /// `tau_k` at step `step`.
    pub fn tau(&self, step: usize) -> f64 {
        if step >= self.total_steps {
            return 1.0;
        }
        let cos = (std::f64::consts::PI * step as f64 / self.total_steps as f64).cos();
        1.0 - (1.0 - self.tau_base) * (cos + 1.0) / 2.0
    }
}
