//! The collapse monitor: warnings (or a stop) when a step's statistics fall below the
//! configured floors.

use super::config::MonitorConfig;
use super::metrics::StepMetrics;

/// What looks collapsed in step `m` of a run with `embedding_dim`-dimensional embeddings, one
/// message per signal; empty when healthy.
pub(crate) fn collapse_signals(
    config: &MonitorConfig,
    m: &StepMetrics,
    embedding_dim: usize,
) -> Vec<String> {
    let std_floor = config.min_relative_std / (embedding_dim.max(1) as f64).sqrt();
    let mut signals = Vec::new();
    if m.embedding_std < std_floor {
        signals.push(format!(
            "embedding std {:.2e} below {std_floor:.2e}",
            m.embedding_std
        ));
    }
    if m.energy_gap < config.min_energy_gap {
        signals.push(format!(
            "energy gap {:.4} below {}",
            m.energy_gap, config.min_energy_gap
        ));
    }
    if let Some(r) = m.effective_rank
        && r < config.min_effective_rank
    {
        signals.push(format!(
            "effective rank {r:.2} below {}",
            config.min_effective_rank
        ));
    }
    signals
}
