//! Contiguous f32 access to flex tensors, shared by this crate's CPU kernels
//! ([`conv`](crate::conv), [`batch_norm`](crate::batch_norm)).

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{DType, Shape};

/// `t` itself when it is already contiguous, else a contiguous copy.
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The f32 values of a contiguous tensor (see [`contiguous`]).
pub(crate) fn f32_slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("CPU kernel: expected a contiguous f32 tensor")
}

/// A contiguous f32 tensor of `shape` owning `data`.
pub(crate) fn f32_tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(data),
        Layout::contiguous(Shape::from(shape)),
        DType::F32,
    )
}
