//! The per-step values of a run's schedules: learning rate, weight decay, target momentum, and
//! the method's own.

use crate::error::Result;
use crate::method::{Method, MethodConfig, Progress, ScheduleValues};
use crate::optim::{CosineSchedule, EmaSchedule, WarmupCosine};

use super::config::PretrainConfig;

/// The schedules of a run, built from its configuration and its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedules {
    lr: WarmupCosine,
    weight_decay: CosineSchedule,
    ema: EmaSchedule,
}

impl Schedules {
    /// The schedules of `config` over `steps_per_epoch * config.epochs` steps.
    pub(crate) fn new<C: MethodConfig>(
        config: &PretrainConfig<C>,
        steps_per_epoch: usize,
    ) -> Result<Self> {
        let total = steps_per_epoch.saturating_mul(config.epochs).max(1);
        let peak = config.lr.peak(config.loader.batch_size);
        // A run shorter than its warmup warms up throughout, as solo-learn's scheduler does.
        let warmup = config
            .lr
            .warmup_epochs
            .saturating_mul(steps_per_epoch)
            .min(total);
        let lr =
            WarmupCosine::new(peak, warmup, total)?.with_final_lr(config.lr.final_lr.min(peak))?;
        let wd = config.optimizer.weight_decay;
        let weight_decay =
            CosineSchedule::new(wd, config.optimizer.weight_decay_end.unwrap_or(wd), total)?;
        let ema = config.ema.schedule(total)?;
        Ok(Self {
            lr,
            weight_decay,
            ema,
        })
    }

    /// The peak learning rate (the rate of fixed-rate parameter groups).
    pub(crate) fn peak_lr(&self) -> f64 {
        self.lr.base_lr
    }

    /// The values at `progress` for `method`; `has_target` adds the target's momentum.
    pub(crate) fn values<M: Method>(
        &self,
        method: &M,
        progress: &Progress,
        has_target: bool,
    ) -> ScheduleValues {
        let step = progress.step;
        ScheduleValues::at(
            progress,
            method,
            self.lr.lr(step),
            self.weight_decay.value(step),
            has_target.then(|| self.ema.tau(step)),
        )
    }
}
