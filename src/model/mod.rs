//! The trained networks around a backbone: the [joint embedding](JointEmbedding) (online branch
//! and momentum target), [projection heads](ProjectionHead) with each paper's presets, the
//! heads' [feature batch norm](FeatureBatchNorm), the [EMA](ema) update of a target network,
//! SwAV / DeepCluster [prototypes](Prototypes), and the [token transformer](TokenTransformer)
//! of MAE's decoder and I-JEPA's predictor.

pub mod ema;
pub mod feature_batch_norm;
pub mod head;
pub mod joint_embedding;
pub mod prototypes;
pub mod token_transformer;

pub use ema::{ema_copy, ema_update};
pub use feature_batch_norm::{FeatureBatchNorm, FeatureBatchNormConfig};
pub use head::{HeadBlock, HeadBlockConfig, HeadNorm, ProjectionHead, ProjectionHeadConfig};
pub use joint_embedding::{
    BackboneBranch, Branch, JointEmbedding, JointEmbeddingConfig, OnlineNetwork,
};
pub use prototypes::Prototypes;
pub use token_transformer::{TokenTransformer, TokenTransformerShape};
