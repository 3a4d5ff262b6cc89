//! Summing parameter gradients over ranks in one flattened buffer, and the checksum that
//! shows the ranks' parameters are still the same.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::World;
use crate::check::host_f32;
use crate::error::{Error, Result};

/// One trainable parameter's place in the flattened buffer.
struct Slot {
    id: ParamId,
    dims: Vec<usize>,
    device: Device,
    offset: usize,
}

/// Replaces every trainable parameter's gradient in `grads` by its sum over the ranks of
/// `world`, and `extra` (the step's loss) by its sum: one all-reduce per step, of a buffer
/// laid out as `[presence of each gradient | the gradients, flattened | extra]`. A gradient
/// absent on some ranks counts as zeros there; one absent on every rank stays absent.
pub(crate) fn sum_gradients<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    extra: &mut [f32],
    world: &World,
) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    let mut flatten = Flatten {
        grads,
        slots: Vec::new(),
        values: Vec::new(),
        presence: Vec::new(),
        error: None,
    };
    module.visit(&mut flatten);
    if let Some(e) = flatten.error {
        return Err(e);
    }
    let Flatten {
        grads,
        slots,
        values,
        presence,
        ..
    } = flatten;
    let mut buffer = presence;
    let head = buffer.len();
    buffer.extend(values);
    buffer.extend_from_slice(extra);
    world.all_reduce_sum(&mut buffer);
    let tail = buffer.len() - extra.len();
    extra.copy_from_slice(&buffer[tail..]);
    module.visit(&mut Restore {
        grads,
        slots: slots.into_iter(),
        presence: &buffer[..head],
        values: &buffer[head..tail],
        index: 0,
    });
    Ok(())
}

/// Takes each trainable parameter's gradient out of `grads` into the buffer.
struct Flatten<'a> {
    grads: &'a mut GradientsParams,
    slots: Vec<Slot>,
    values: Vec<f32>,
    presence: Vec<f32>,
    error: Option<Error>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() || self.error.is_some() {
            return;
        }
        let offset = self.values.len();
        let (dims, device, present) = match self.grads.remove::<D>(param.id) {
            Some(grad) => {
                let dims = grad.dims().to_vec();
                let device = grad.device();
                match host_f32(grad, "a gradient to sum across ranks") {
                    Ok(v) => self.values.extend(v),
                    Err(e) => {
                        self.error = Some(e);
                        return;
                    }
                }
                (dims, device, 1.0)
            }
            None => {
                let value = param.val().inner();
                let dims = value.dims().to_vec();
                self.values
                    .resize(offset + dims.iter().product::<usize>(), 0.0);
                (dims, value.device(), 0.0)
            }
        };
        self.presence.push(present);
        self.slots.push(Slot {
            id: param.id,
            dims,
            device,
            offset,
        });
    }
}

/// Puts the summed gradients back, visiting the parameters in the same order.
struct Restore<'a> {
    grads: &'a mut GradientsParams,
    slots: std::vec::IntoIter<Slot>,
    presence: &'a [f32],
    values: &'a [f32],
    index: usize,
}

impl ModuleVisitor for Restore<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let Some(slot) = self.slots.next() else {
            return;
        };
        let present = self.presence[self.index] > 0.0;
        self.index += 1;
        if !present || slot.id != param.id {
            return;
        }
        let len: usize = slot.dims.iter().product();
        let values = self.values[slot.offset..slot.offset + len].to_vec();
        let dims: [usize; D] = std::array::from_fn(|d| slot.dims[d]);
        self.grads.register::<D>(
            param.id,
            Tensor::from_data(TensorData::new(values, dims), &slot.device),
        );
    }
}

/// A cheap fingerprint of `module`'s trainable parameters: the sum of their values and the
/// sum of their squares, each weighted by a position pattern so swapped values show too.
pub(crate) fn parameter_checksum<M: Module>(module: &M) -> Result<[f64; 2]> {
    struct Sum {
        sums: [f64; 2],
        error: Option<Error>,
    }
    impl ModuleVisitor for Sum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_require_grad() || self.error.is_some() {
                return;
            }
            match host_f32(param.val(), "parameters to checksum") {
                Ok(values) => {
                    for (i, &v) in values.iter().enumerate() {
                        let w = 1.0 + (i % 7) as f64;
                        self.sums[0] += w * f64::from(v);
                        self.sums[1] += w * f64::from(v) * f64::from(v);
                    }
                }
                Err(e) => self.error = Some(e),
            }
        }
    }
    let mut sum = Sum {
        sums: [0.0; 2],
        error: None,
    };
    module.visit(&mut sum);
    match sum.error {
        Some(e) => Err(e),
        None => Ok(sum.sums),
    }
}

/// Compares this rank's parameter checksum with rank 0's: an error naming both when the
/// parameters drifted apart.
pub(crate) fn check_same_parameters<M: Module>(
    module: &M,
    world: &World,
    step: usize,
) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    let own = parameter_checksum(module)?;
    let mut root = own;
    world.broadcast(&mut root);
    if own == root {
        return Ok(());
    }
    Err(Error::Distributed {
        rank: world.rank(),
        reason: format!(
            "after step {step} the parameters differ from rank 0's (checksums {own:?} here, \
             {root:?} on rank 0): the ranks no longer train the same model"
        ),
    })
}
