//! The element-wise parts of a vision transformer's step on the flex device: the exact GELU
//! ([`gelu_forward`], [`gelu_backward`]) and layer normalisation ([`layer_norm_forward`],
//! [`layer_norm_backward`]), each one vectorised pass, and their burn backend extension
//! ([`FastTransformerOps`]). [`crate::gelu::gelu`] and [`crate::layer_norm::layer_norm`] route
//! to them.

mod extension;
mod gelu;
mod layer_norm;

pub use extension::FastTransformerOps;
pub use gelu::{gelu_backward, gelu_forward};
pub use layer_norm::{RowShape, layer_norm_backward, layer_norm_forward};
