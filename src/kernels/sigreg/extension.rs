//! The Epps-Pulley kernel as a burn backend extension on `Flex`, with an autodiff backward:
//! one backward step for the whole statistic. [`crate::method::Sigreg::loss`] checks the
//! device first; other devices keep burn's operations.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use super::kernel::{
    EppsPulleyMoments, ProjectionShape, epps_pulley_backward, epps_pulley_forward,
};
use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor};
use crate::method::sigreg::EppsPulleyGrid;

/// SIGReg's Epps-Pulley statistic computed by this crate's kernel.
#[backend_extension(Flex, Autodiff)]
pub trait FastSigregOps: Backend {
    /// `N/(V·M) · Σ_{v,m,k} w_k ((mean_n cos(t_k x_vnm) - φ(t_k))² + (mean_n sin(t_k x_vnm))²)`
    /// of projections `[V, N, M]` on the grid of `knots` uniform knots over `[0, t_max]`
    /// ([`EppsPulleyGrid::new`]): a tensor of one value.
    fn fast_epps_pulley(
        projections: FloatTensor<Self>,
        knots: usize,
        t_max: f64,
    ) -> FloatTensor<Self>;
}

fn projection_shape(x: &FlexTensor) -> ProjectionShape {
    let dims: Vec<usize> = x.layout().shape().iter().copied().collect();
    assert_eq!(
        dims.len(),
        3,
        "Epps-Pulley: projections [V, N, M], got {dims:?}"
    );
    ProjectionShape {
        views: dims[0],
        samples: dims[1],
        directions: dims[2],
    }
}

/// The statistic as a one-value tensor, and the moments for the backward pass.
fn forward(x: &FlexTensor, grid: &EppsPulleyGrid) -> (FlexTensor, EppsPulleyMoments) {
    let (value, moments) = epps_pulley_forward(projection_shape(x), grid, f32_slice(x));
    (f32_tensor(vec![value as f32], vec![1]), moments)
}

impl FastSigregOps for Flex {
    fn fast_epps_pulley(
        projections: FloatTensor<Self>,
        knots: usize,
        t_max: f64,
    ) -> FloatTensor<Self> {
        forward(&contiguous(projections), &EppsPulleyGrid::new(knots, t_max)).0
    }
}

/// What the backward step keeps from the forward pass.
#[derive(Debug, Clone)]
struct SavedEppsPulley {
    projections: FlexTensor,
    grid: EppsPulleyGrid,
    moments: EppsPulleyMoments,
}

/// The statistic's backward step: the gradient of the projections.
#[derive(Debug)]
struct EppsPulleyBackward;

impl Backward<Flex, 1> for EppsPulleyBackward {
    type State = SavedEppsPulley;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let SavedEppsPulley {
            projections,
            grid,
            moments,
        } = ops.state;
        if let [Some(node)] = ops.parents {
            let shape = projection_shape(&projections);
            let g = f64::from(f32_slice(&grad)[0]);
            let dx = epps_pulley_backward(shape, &grid, f32_slice(&projections), &moments, g);
            let dims = vec![shape.views, shape.samples, shape.directions];
            grads.register::<Flex>(node.id, f32_tensor(dx, dims));
        }
    }
}

impl<C: CheckpointStrategy> FastSigregOps for Autodiff<Flex, C> {
    fn fast_epps_pulley(
        projections: FloatTensor<Self>,
        knots: usize,
        t_max: f64,
    ) -> FloatTensor<Self> {
        let grid = EppsPulleyGrid::new(knots, t_max);
        match EppsPulleyBackward
            .prepare::<C>([projections.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let projections = contiguous(projections.primitive().clone());
                let (value, moments) = forward(&projections, &grid);
                let saved = SavedEppsPulley {
                    projections,
                    grid,
                    moments,
                };
                prep.finish(saved, value)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(&contiguous(projections.into_primitive()), &grid).0)
            }
        }
    }
}
