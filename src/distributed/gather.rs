//! Gathering rows across ranks: the gradient-carrying all-gather of embeddings, and the plain
//! all-gathers and means of values that carry no gradient.

use burn::tensor::{Tensor, TensorData};

use super::{World, active};
use crate::check::host_f32;
use crate::error::Result;
use crate::method::ViewEmbeddings;

/// Every rank's `x` (`[B, ...]`, the same shape on every rank) concatenated along the first
/// dimension in rank order: `[size * B, ...]` on every rank of the thread's training world,
/// and `x` itself in a world of one.
///
/// Differentiable like PyTorch's `GatherLayer` (SimCLR, VICReg, Barlow Twins): the backward
/// pass sums the output's gradient over all ranks and hands each rank the rows of its own
/// `x`, `dx_r = sum_s dL_s / dy[r B .. (r + 1) B]` (one reduce-scatter), so a loss every rank computes on the
/// gathered batch backpropagates into every rank's encoder. Every rank must call it, in the
/// same order, as every rank must run the backward pass.
pub fn gather_rows<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>> {
    let world = active().world;
    if !world.is_distributed() {
        return Ok(x);
    }
    #[cfg(feature = "mpi")]
    if x.is_autodiff() {
        return Ok(extension::gather_tracked(x, &world));
    }
    host_gather(x, &world)
}

/// The gather without a gradient, through the host.
fn host_gather<const D: usize>(x: Tensor<D>, world: &World) -> Result<Tensor<D>> {
    let mut dims = x.dims();
    let device = x.device();
    let values = host_f32(x.detach(), "rows to gather across ranks")?;
    dims[0] *= world.size();
    Ok(Tensor::from_data(
        TensorData::new(world.all_gather(&values), dims),
        &device,
    ))
}

/// The embeddings every rank compares: projections and predictions through [`gather_rows`]
/// (keeping their gradients), the momentum target's projections without one. Tokens, images
/// and masks stay local: a method that uses them computes its loss per image.
pub(crate) fn gather_embeddings(views: ViewEmbeddings) -> Result<ViewEmbeddings> {
    let gather_all = |list: Vec<Tensor<2>>| -> Result<Vec<Tensor<2>>> {
        list.into_iter().map(gather_rows::<2>).collect()
    };
    Ok(ViewEmbeddings {
        projections: gather_all(views.projections)?,
        predictions: gather_all(views.predictions)?,
        targets: gather_all(views.targets.into_iter().map(|t| t.detach()).collect())?,
        ..views
    })
}

/// Every rank's dataset indices, in rank order (the order of [`gather_rows`]'s rows).
pub(crate) fn gather_indices(indices: &[usize]) -> Vec<usize> {
    let world = active().world;
    let local: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    world
        .all_gather_u64(&local)
        .into_iter()
        .map(|i| i as usize)
        .collect()
}

/// The mean of `x` over the ranks of the thread's training world (detached; `x` itself in a
/// world of one): statistics of the global batch from each rank's statistics of its own
/// (DINO's centre).
pub(crate) fn mean_across_ranks<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>> {
    let world = active().world;
    if !world.is_distributed() {
        return Ok(x);
    }
    let dims = x.dims();
    let device = x.device();
    let mut values = host_f32(x.detach(), "statistics to average across ranks")?;
    world.all_reduce_sum(&mut values);
    let n = world.size() as f32;
    values.iter_mut().for_each(|v| *v /= n);
    Ok(Tensor::from_data(TensorData::new(values, dims), &device))
}

#[cfg(feature = "mpi")]
mod extension {
    //! The all-gather as an autodiff operation, for every backend compiled in.

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, TensorMetadata, backend_extension};
    use burn::tensor::{Tensor, TensorData, try_read_sync};

    use super::super::{World, mpi_world};

    /// Gathers the rows of a tensor across ranks; see [`super::gather_rows`].
    #[backend_extension(
        Flex: cfg(feature = "flex"),
        Cube: cfg(any(feature = "wgpu", feature = "cuda")),
        NdArray: cfg(feature = "ndarray"),
        Autodiff
    )]
    pub trait RankGather: Backend {
        /// `[size * B, ...]` from every rank's `[B, ...]` in a world of `size`.
        fn rank_gather_rows(x: FloatTensor<Self>, size: usize) -> FloatTensor<Self>;
    }

    pub(super) fn gather_tracked<const D: usize>(x: Tensor<D>, world: &World) -> Tensor<D> {
        use burn::backend::Dispatch;
        Tensor::from_dispatch(<Dispatch as RankGather>::rank_gather_rows(
            x.into_dispatch(),
            world.size(),
        ))
    }

    /// The values of a primitive on the host; a backend that cannot read its own tensor back
    /// mid-step has no way to report it from inside a backward pass.
    fn host_values<B: Backend>(x: FloatTensor<B>) -> Vec<f32> {
        let data = try_read_sync(B::float_into_data(x))
            .expect("blocking reads are supported off WASM")
            .expect("a tensor of this step can be read back from its device");
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32 above")
    }

    fn gather_primitive<B: Backend>(x: FloatTensor<B>, size: usize) -> FloatTensor<B> {
        let device = x.device();
        let mut dims = x.shape().to_vec();
        let values = host_values::<B>(x);
        dims[0] *= size;
        B::float_from_data(
            TensorData::new(mpi_world::all_gather(&values, size), dims),
            &device,
        )
    }

    macro_rules! plain_gather {
        ($backend:ty) => {
            impl RankGather for $backend {
                fn rank_gather_rows(x: FloatTensor<Self>, size: usize) -> FloatTensor<Self> {
                    gather_primitive::<Self>(x, size)
                }
            }
        };
    }

    #[cfg(feature = "flex")]
    plain_gather!(burn::backend::Flex);
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    plain_gather!(burn::backend::Cube);
    #[cfg(feature = "ndarray")]
    plain_gather!(burn::backend::NdArray);

    /// Which rows of the gathered gradient belong to this rank.
    #[derive(Debug, Clone)]
    struct OwnRows {
        local: usize,
        size: usize,
    }

    #[derive(Debug)]
    struct GatherBackward;

    impl<B: Backend> Backward<B, 1> for GatherBackward {
        type State = OwnRows;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let grad = grads.consume::<B>(&ops.node);
            let [parent] = ops.parents;
            let device = grad.device();
            let mut dims = grad.shape().to_vec();
            let OwnRows { local, size } = ops.state;
            // Each rank needs only the sum of its own rows: a reduce-scatter, not the
            // all-reduce of the whole gathered gradient (GatherLayer's), half the bytes.
            let own = mpi_world::reduce_scatter_sum(&host_values::<B>(grad), size);
            let Some(parent) = parent else { return };
            dims[0] = local;
            grads.register::<B>(
                parent.id,
                B::float_from_data(TensorData::new(own, dims), &device),
            );
        }
    }

    impl<B: Backend, C: CheckpointStrategy> RankGather for Autodiff<B, C> {
        fn rank_gather_rows(x: FloatTensor<Self>, size: usize) -> FloatTensor<Self> {
            let local = x.primitive().shape().to_vec()[0];
            match GatherBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(
                    OwnRows { local, size },
                    gather_primitive::<B>(x.primitive().clone(), size),
                ),
                OpsKind::UnTracked(prep) => {
                    prep.finish(gather_primitive::<B>(x.into_primitive(), size))
                }
            }
        }
    }
}
