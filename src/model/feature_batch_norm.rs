//! Batch normalisation over the feature dimension of `[B, D]` embeddings, with or without a
//! learnable affine transform (SimSiam's last projector layer has none).

use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::tensor::module::{batch_norm, batch_norm_train};
use burn::tensor::{Device, Tensor, activation};

use crate::check;

/// Configuration of a [`FeatureBatchNorm`].
#[derive(Config, Debug)]
pub struct FeatureBatchNormConfig {
    /// Number of features `D`.
    pub num_features: usize,
    /// Learnable scale and shift (PyTorch's `affine`).
    #[config(default = true)]
    pub affine: bool,
    /// Added to the variance for stability (PyTorch's default 1e-5).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the newest batch in the running statistics (PyTorch's default 0.1).
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl FeatureBatchNormConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> FeatureBatchNorm {
        let d = self.num_features;
        let (gamma, beta) = if self.affine {
            (
                Some(Param::from_tensor(Tensor::ones([d], device))),
                Some(Param::from_tensor(Tensor::zeros([d], device))),
            )
        } else {
            (None, None)
        };
        FeatureBatchNorm {
            gamma,
            beta,
            running_mean: RunningState::new(Tensor::zeros([d], device)),
            running_var: RunningState::new(Tensor::ones([d], device)),
            training: Param::from_bool(true),
            epsilon: self.epsilon,
            momentum: self.momentum,
        }
    }
}

/// Batch normalisation of `[B, D]` embeddings (PyTorch's `BatchNorm1d`):
/// `y = gamma (x - mean_B(x)) / sqrt(var_B(x) + eps) + beta` while training, with running
/// statistics (unbiased variance, as PyTorch) used for inference.
#[derive(Module, Debug)]
pub struct FeatureBatchNorm {
    /// Learnable scale, absent when not affine.
    pub gamma: Option<Param<Tensor<1>>>,
    /// Learnable shift, absent when not affine.
    pub beta: Option<Param<Tensor<1>>>,
    /// Running mean of the features.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running (unbiased) variance of the features.
    pub running_var: RunningState<Tensor<1>>,
    /// Whether training behaviour (batch statistics) is enabled.
    pub training: Param<Flag>,
    /// Added to the variance for stability.
    pub epsilon: f64,
    /// Weight of the newest batch in the running statistics.
    pub momentum: f64,
}

impl FeatureBatchNorm {
    /// Number of features `D`.
    pub fn num_features(&self) -> usize {
        self.running_mean.value().dims()[0]
    }

    /// Whether this call would use batch statistics (autodiff device and training flag on).
    pub fn uses_batch_statistics(&self, input: &Tensor<2>) -> bool {
        input.device().is_autodiff() && self.training.is_enabled()
    }

    /// Normalises `[B, D]`. With batch statistics the batch must hold at least 2 samples.
    pub fn forward(&self, input: Tensor<2>) -> crate::Result<Tensor<2>> {
        self.forward_activated(input, false)
    }

    /// [`forward`](Self::forward), then a ReLU when `relu`; in training on the CPU both run in
    /// one pass of this crate's fused kernels (`crate::batch_norm`).
    ///
    /// On several ranks with synchronised batch norm
    /// ([`DistributedConfig::sync_batch_norm`](crate::distributed::DistributedConfig)), the
    /// batch statistics are those of the global batch: every rank's rows are gathered
    /// (keeping their gradients), normalised together, and each rank keeps its own.
    pub fn forward_activated(&self, input: Tensor<2>, relu: bool) -> crate::Result<Tensor<2>> {
        let active = crate::distributed::active();
        if active.sync_batch_norm
            && active.world.is_distributed()
            && self.uses_batch_statistics(&input)
        {
            let local = input.dims()[0];
            let all = crate::distributed::gather_rows(input)?;
            let rows = active.world.shard().rows(local);
            return Ok(self.normalize(all, relu)?.slice([rows]));
        }
        self.normalize(input, relu)
    }

    /// The normalisation of `input` with its own batch statistics (or the running ones).
    fn normalize(&self, input: Tensor<2>, relu: bool) -> crate::Result<Tensor<2>> {
        let [batch, features] = input.dims();
        let device = input.device();
        let gamma = match &self.gamma {
            Some(g) => g.val(),
            None => Tensor::ones([features], &device),
        };
        let beta = match &self.beta {
            Some(b) => b.val(),
            None => Tensor::zeros([features], &device),
        };
        let activate = |x: Tensor<2>| if relu { activation::relu(x) } else { x };
        if !self.uses_batch_statistics(&input) {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            return Ok(activate(batch_norm(
                input,
                gamma,
                beta,
                mean,
                var,
                self.epsilon,
            )));
        }
        check::min_batch(|| "batch normalisation".into(), &input, 2)?;
        #[cfg(feature = "flex")]
        if crate::batch_norm::fused_kernels_apply(&input, &gamma) {
            use crate::kernels::batch_norm::{After, fused_batch_norm_train};

            let after = if relu { After::Relu } else { After::Nothing };
            let fused = fused_batch_norm_train(input, gamma, beta, self.epsilon, after);
            self.update_running(batch, fused.mean, fused.variance, &device);
            return Ok(fused.output);
        }
        let result = batch_norm_train(input, gamma, beta, self.epsilon);
        self.update_running(batch, result.mean, result.variance, &device);
        Ok(activate(result.output))
    }

    /// `r <- (1 - m) r + m stat`, with the unbiased variance (PyTorch's `BatchNorm1d`).
    fn update_running(
        &self,
        batch: usize,
        mean: Tensor<1>,
        biased_variance: Tensor<1>,
        device: &Device,
    ) {
        let unbiased = biased_variance.mul_scalar(batch as f64 / (batch as f64 - 1.0));
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(device);
        let running_var = self.running_var.value_sync().to_device(device);
        self.running_mean.update(
            running_mean
                .mul_scalar(1.0 - m)
                .add(mean.mul_scalar(m))
                .detach(),
        );
        self.running_var.update(
            running_var
                .mul_scalar(1.0 - m)
                .add(unbiased.mul_scalar(m))
                .detach(),
        );
    }
}
