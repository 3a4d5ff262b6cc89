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

/// A zero-filled `Vec<f32>` of `len` values, filled by rayon's threads. `vec![0.0; len]` is one
/// thread's `memset` whenever the allocator reuses a freed block (which
/// [`retain_freed_memory`](crate::kernels::allocator::retain_freed_memory) makes the rule for
/// activations), leaving the other cores idle.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    use rayon::prelude::*;

    /// Values per task: 256 KiB, large enough that a task outweighs its scheduling.
    const CHUNK: usize = 1 << 16;
    if len <= CHUNK {
        return vec![0.0; len];
    }
    let mut values = Vec::with_capacity(len);
    values.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| {
            for value in chunk {
                value.write(0.0);
            }
        });
    // SAFETY: the loop above initialised every one of the first `len` values.
    unsafe { values.set_len(len) };
    values
}

/// `chunk` as initialised values, once a kernel has written every one of them.
///
/// # Safety
/// Every value of `chunk` must have been written.
pub(crate) unsafe fn assume_written(chunk: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: the caller wrote every value; `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { &mut *(std::ptr::from_mut(chunk) as *mut [f32]) }
}

/// A `Vec<f32>` of `len` values written by `fill` in parallel: `fill(index, chunk)` receives the
/// `index`-th run of `chunk_len` values (the last one shorter) and must write every one of them.
/// No value is zeroed first, so a kernel that writes its whole output pays one pass, not two.
///
/// # Safety
/// `fill` must initialise every element of every chunk it is given; the vector is returned
/// as initialised.
pub(crate) unsafe fn par_filled(
    len: usize,
    chunk_len: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;

    let mut values = Vec::with_capacity(len);
    values.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk_len.max(1))
        .enumerate()
        .for_each(|(index, chunk)| fill(index, chunk));
    // SAFETY: the caller's `fill` wrote every value of every chunk, which cover `0..len`.
    unsafe { values.set_len(len) };
    values
}
