//! Timing shared by the benches.

use std::time::Instant;

/// The median wall-clock milliseconds of `reps` calls of `run`, after one untimed warm-up call
/// (first-touch page faults and lazily built plans stay out of the figure).
pub fn median_ms(reps: usize, mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The timed repetitions asked for by `SELFSUP_BENCH_REPS` (at least 1), else `default`.
pub fn repetitions(default: usize) -> usize {
    std::env::var("SELFSUP_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}
