//! Optimisers and schedules burn does not have: [LARS](lars), warmup + cosine learning rate,
//! BYOL's EMA schedule.

pub mod lars;
#[cfg(feature = "flex")]
mod lars_cpu;
pub mod schedule;

pub use lars::{Lars, LarsConfig, LarsState};
pub use schedule::{EmaSchedule, WarmupCosine};
