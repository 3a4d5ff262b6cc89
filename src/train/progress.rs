//! What a run shows while it trains: a progress bar on a terminal, and one line per epoch
//! (on the bar's terminal, or on stderr without a bar or a terminal, so batch-job logs show
//! progress).

use indicatif::{ProgressBar, ProgressStyle};

use super::metrics::{EpochMetrics, StepMetrics};

/// The bar (when enabled) and the epoch lines.
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    epochs: usize,
    silent: bool,
}

impl Reporter {
    /// A reporter for `epochs` epochs of `total_steps` steps, `done` of them already taken;
    /// `bar` shows the progress bar.
    pub(crate) fn new(bar: bool, total_steps: usize, done: usize, epochs: usize) -> Self {
        let bar = bar.then(|| {
            let bar = ProgressBar::new(total_steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps, {elapsed_precise} \
                     elapsed, ETA {eta_precise} | {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_position(done as u64);
            bar
        });
        Self {
            bar,
            epochs,
            silent: false,
        }
    }

    /// A reporter that shows nothing (the ranks other than 0).
    pub(crate) fn silent(epochs: usize) -> Self {
        Self {
            bar: None,
            epochs,
            silent: true,
        }
    }

    /// Prints a line above the bar, or on stderr.
    pub(crate) fn line(&self, line: String) {
        if self.silent {
            return;
        }
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => crate::distributed::eprint_line(&line),
        }
    }

    /// A warning line.
    pub(crate) fn warn(&self, message: String) {
        self.line(format!("warning: {message}"));
    }

    /// Marks the start of `epoch` (0-based).
    pub(crate) fn start_epoch(&self, epoch: usize) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        }
    }

    /// Advances the bar past step `m`.
    pub(crate) fn step(&self, m: &StepMetrics) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4}, lr {:.4}, {:.0} img/s",
                m.loss, m.lr, m.images_per_second
            ));
        }
    }

    /// The line of a finished epoch: loss, learning rate, images/s and kNN when measured.
    pub(crate) fn epoch(&self, m: &EpochMetrics) {
        self.line(format!(
            "epoch {}/{}: loss {:.4}, lr {:.4}, {:.0} img/s, {:.0} s{}",
            m.epoch + 1,
            self.epochs,
            m.loss,
            m.lr,
            m.images_per_second,
            m.seconds,
            m.knn_top1
                .map(|a| format!(", kNN top-1 {:.2}%", 100.0 * a))
                .unwrap_or_default()
        ));
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
