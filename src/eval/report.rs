//! Classification results: top-1 accuracy and the confusion matrix.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The arg-max class of each row of `[n, classes]` logits, on the host.
pub fn argmax_classes(logits: Tensor<2>) -> Result<Vec<usize>> {
    let values = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| Error::MissingInput {
            context: "classification".into(),
            what: format!("readable predictions ({e:?})"),
        })?;
    Ok(values.into_iter().map(|v| v.max(0) as usize).collect())
}

/// The outcome of evaluating a classifier on labelled images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Fraction of images whose predicted class is the true one, in `[0, 1]`.
    pub top1: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Number of images evaluated.
    pub num_samples: usize,
}

impl ClassificationReport {
    /// Builds the report from predictions and true labels (`num_classes` classes).
    pub fn from_predictions(predicted: &[usize], truth: &[usize], num_classes: usize) -> Self {
        let mut confusion = vec![vec![0usize; num_classes]; num_classes];
        let mut correct = 0;
        for (&p, &t) in predicted.iter().zip(truth) {
            if t < num_classes && p < num_classes {
                confusion[t][p] += 1;
            }
            correct += usize::from(p == t);
        }
        let n = predicted.len().min(truth.len());
        Self {
            top1: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
            confusion,
            num_samples: n,
        }
    }

    /// The confusion matrix as aligned text, rows = true class, columns = predicted class.
    pub fn confusion_table(&self, classes: &[String]) -> String {
        let name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
        let width = (0..self.confusion.len())
            .map(|i| name(i).len())
            .max()
            .unwrap_or(1)
            .max(5);
        let mut out = format!("{:>width$} |", "true\\pred");
        for j in 0..self.confusion.len() {
            out += &format!(" {:>5}", j);
        }
        out.push('\n');
        for (i, row) in self.confusion.iter().enumerate() {
            out += &format!("{:>width$} |", name(i));
            for v in row {
                out += &format!(" {v:>5}");
            }
            out.push('\n');
        }
        out
    }
}
