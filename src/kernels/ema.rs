//! The EMA target's update `xi ← tau xi + (1 - tau) theta` ([`crate::model::ema`]) for one f32
//! parameter in one parallel pass on the CPU (`Device::flex()`), as a burn backend extension.
//!
//! The tensor form is three single-threaded passes (two scaled copies and their sum), each
//! allocating a temporary the size of the parameter; for a ViT-Tiny target that was one core
//! busy for the whole update while the other waited. The kernel computes the same f32
//! operations in the same order (`xi · f32(tau) + theta · f32(1 - tau)`), so the result is the
//! tensor form's to the bit.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor, par_filled};

/// Values per parallel task.
const CHUNK: usize = 1 << 15;

/// `tau · target + (1 - tau) · online`, element by element, in parallel.
pub(crate) fn ema_blend(target: &[f32], online: &[f32], tau: f64) -> Vec<f32> {
    let (keep, take) = (tau as f32, (1.0 - tau) as f32);
    // SAFETY: each task writes every value of its chunk.
    unsafe {
        par_filled(target.len(), CHUNK, |index, out| {
            let start = index * CHUNK;
            let target = &target[start..start + out.len()];
            let online = &online[start..start + out.len()];
            for ((out, &xi), &theta) in out.iter_mut().zip(target).zip(online) {
                out.write(xi * keep + theta * take);
            }
        })
    }
}

/// The EMA blend as a backend operation on the flex CPU backend.
#[backend_extension(Flex)]
pub trait FastEma: Backend {
    /// `tau · target + (1 - tau) · online` for two tensors of one shape.
    fn fast_ema_blend(
        target: FloatTensor<Self>,
        online: FloatTensor<Self>,
        tau: f64,
    ) -> FloatTensor<Self>;
}

impl FastEma for Flex {
    fn fast_ema_blend(
        target: FloatTensor<Self>,
        online: FloatTensor<Self>,
        tau: f64,
    ) -> FloatTensor<Self> {
        let shape: Vec<usize> = target.layout().shape().iter().copied().collect();
        let (target, online) = (contiguous(target), contiguous(online));
        f32_tensor(
            ema_blend(f32_slice(&target), f32_slice(&online), tau),
            shape,
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, Tensor};

    use crate::model::ema::ema_update;

    /// The fused blend (what `ema_update` runs for a training network's parameters on the
    /// flex device) equals the tensor form to the bit, across several parallel chunks and a
    /// ragged end, and the target stays on the autodiff device.
    #[test]
    fn fused_blend_matches_tensor_ops_bit_for_bit() {
        let device = Device::flex().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        for (len, tau) in [(7, 0.996), (100_003, 0.5), (65_536, 0.0), (3, 1.0)] {
            let target = Tensor::<1>::random([len], normal, &device);
            let online = Tensor::<1>::random([len], normal, &device);
            let expected = target.clone().mul_scalar(tau) + online.clone().mul_scalar(1.0 - tau);
            let blended = ema_update(Param::from_tensor(target), &Param::from_tensor(online), tau)
                .unwrap()
                .val();
            assert!(blended.is_autodiff() && !blended.is_require_grad());
            assert_eq!(
                blended.into_data().try_to_vec::<f32>().unwrap(),
                expected.into_data().try_to_vec::<f32>().unwrap(),
                "{len} values, tau {tau}"
            );
        }
    }
}
