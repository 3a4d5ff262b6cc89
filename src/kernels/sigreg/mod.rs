//! SIGReg's Epps-Pulley statistic (Balestriero & LeCun, "LeJEPA", 2025, arXiv:2511.08544) as
//! one CPU kernel on the projections, forward ([`epps_pulley_forward`]) and backward
//! ([`epps_pulley_backward`]), and its burn backend extension ([`FastSigregOps`]);
//! [`crate::method::Sigreg::loss`] routes to it on the flex device.
//!
//! burn's composition of the statistic (and PyTorch's, in lightly and the reference code)
//! multiplies every projection by every knot, `[V, N, M, K]` values, and calls `cos` and `sin`
//! on each of them, then `sin` and `cos` again in the backward pass: four transcendental calls
//! per value and about a dozen passes over a tensor `K` times the size of the projections. The
//! knots are uniform, `t_k = k·Δt`, so here `cos(t_k x)` and `sin(t_k x)` come from one
//! `sin_cos(Δt·x)` per projection by the angle-addition recurrence
//! `e^{i(k+1)θ} = e^{ikθ}·e^{iθ}`, in `f64` (16 steps of the recurrence lose about 1e-15), and
//! the means over the samples are summed in `f64` as they are produced.

mod extension;
mod kernel;

pub use crate::method::sigreg::EppsPulleyGrid;
pub use extension::FastSigregOps;
pub use kernel::{EppsPulleyMoments, ProjectionShape, epps_pulley_backward, epps_pulley_forward};
