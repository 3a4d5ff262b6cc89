//! Input validation shared by the objectives and heads (crate-private).

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// Fails unless `found` has exactly the shape of `expected`.
pub(crate) fn same_shape<const D: usize>(
    context: impl FnOnce() -> String,
    expected: &Tensor<D>,
    found: &Tensor<D>,
) -> Result<()> {
    let (e, f) = (expected.dims(), found.dims());
    if e == f {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            context: context(),
            expected: e.to_vec(),
            found: f.to_vec(),
        })
    }
}

/// Fails unless the leading (batch) dimension is at least `minimum`.
pub(crate) fn min_batch<const D: usize>(
    context: impl FnOnce() -> String,
    tensor: &Tensor<D>,
    minimum: usize,
) -> Result<()> {
    let batch_size = tensor.dims()[0];
    if batch_size >= minimum {
        Ok(())
    } else {
        Err(Error::BatchTooSmall {
            context: context(),
            batch_size,
            minimum,
        })
    }
}

/// Fails unless every element is finite. Reads the tensor back to the host: use it on small
/// tensors or on the error path only.
pub(crate) fn finite<const D: usize>(
    context: impl FnOnce() -> String,
    tensor: &Tensor<D>,
) -> Result<()> {
    let all_finite = tensor
        .clone()
        .without_autodiff()
        .is_finite()
        .all()
        .into_scalar::<bool>();
    if all_finite {
        Ok(())
    } else {
        Err(Error::NonFinite { context: context() })
    }
}

/// The values of a float tensor as `f32` on the host; `what` names them in the error.
pub(crate) fn host_f32<const D: usize>(tensor: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::tensor_read(what, e))
}

/// Reads a one-element tensor as `f32`.
pub(crate) fn scalar(tensor: &Tensor<1>) -> f32 {
    tensor.clone().without_autodiff().into_scalar::<f32>()
}

/// Reads the first `N` elements of `tensor` as `f32`s, in one transfer (NaN past its end).
pub(crate) fn scalars<const N: usize>(tensor: &Tensor<1>) -> [f32; N] {
    let data = tensor.clone().without_autodiff().into_data();
    let mut values = data.iter::<f32>();
    std::array::from_fn(|_| values.next().unwrap_or(f32::NAN))
}

/// Fails with [`Error::InvalidConfig`] unless `value` is finite and `ok`.
pub(crate) fn ensure(field: &str, value: f64, ok: bool, expected: &str) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::invalid_config(field, value, expected))
    }
}
