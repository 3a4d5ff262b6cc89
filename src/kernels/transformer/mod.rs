//! The parts of a vision transformer's step besides its linear layers, on the flex device: the
//! exact GELU ([`gelu_forward`], [`gelu_backward`]) and layer normalisation
//! ([`layer_norm_forward`], [`layer_norm_backward`]), each one vectorised pass, multi-head
//! attention on the packed projections ([`attention_forward`], [`attention_backward`]), the
//! residual connection on all cores ([`residual_add_forward`]), and their burn backend
//! extension ([`FastTransformerOps`]). [`crate::transformer_ops`] routes to them.

mod attention;
mod exp;
mod extension;
mod gelu;
mod layer_norm;
mod residual;

pub use attention::{AttentionShape, attention_backward, attention_forward};
pub use extension::FastTransformerOps;
pub use gelu::{gelu_backward, gelu_forward};
pub use layer_norm::{RowShape, RowStatistics, layer_norm_backward, layer_norm_forward};
pub use residual::residual_add_forward;
