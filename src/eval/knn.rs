//! Weighted k-nearest-neighbour classification on frozen embeddings, the standard monitor of
//! self-supervised training (Wu et al. 2018, "Unsupervised feature learning via
//! non-parametric instance discrimination"; the protocol of lightly's and solo-learn's
//! benchmarks).
//!
//! For a query `q` and a bank of L2-normalised features `b_j` with labels `y_j`, the score of
//! class `c` sums, over the `k` most cosine-similar bank entries, `exp(cos(q, b_j) / T)` for
//! those with `y_j = c`; the prediction is the class with the highest score. Defaults:
//! `k = 200`, `T = 0.1`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::report::ClassificationReport;
use crate::energy::l2_normalize;
use crate::error::{Error, Result};

/// kNN hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Number of neighbours (200 in the standard protocol).
    pub k: usize,
    /// Temperature of the weights `exp(sim / T)` (0.1).
    pub temperature: f64,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 200,
            temperature: 0.1,
        }
    }
}

/// Queries scored per block, bounding the `[block, bank]` similarity matrix in memory.
const QUERY_BLOCK: usize = 256;

/// A feature bank with labels, ready to classify queries.
#[derive(Debug, Clone)]
pub struct KnnClassifier {
    bank: Tensor<2>,
    labels: Vec<usize>,
    num_classes: usize,
    config: KnnConfig,
}

impl KnnClassifier {
    /// Builds the classifier from `[n, d]` bank features (normalised here) and their labels.
    pub fn new(
        bank: Tensor<2>,
        labels: Vec<usize>,
        num_classes: usize,
        config: KnnConfig,
    ) -> Result<Self> {
        let [n, _] = bank.dims();
        if labels.len() != n {
            return Err(Error::ShapeMismatch {
                context: "kNN bank labels".into(),
                expected: vec![n],
                found: vec![labels.len()],
            });
        }
        if n == 0 {
            return Err(Error::BatchTooSmall {
                context: "kNN bank".into(),
                batch_size: 0,
                minimum: 1,
            });
        }
        if config.k == 0 {
            return Err(Error::invalid_config("knn.k", 0, ">= 1"));
        }
        if !(config.temperature.is_finite() && config.temperature > 0.0) {
            return Err(Error::invalid_config(
                "knn.temperature",
                config.temperature,
                "a finite value > 0",
            ));
        }
        if let Some(&l) = labels.iter().find(|&&l| l >= num_classes) {
            return Err(Error::invalid_config(
                "kNN bank label",
                l,
                format!("below the number of classes {num_classes}"),
            ));
        }
        Ok(Self {
            bank: l2_normalize(bank),
            labels,
            num_classes,
            config,
        })
    }

    /// Per query, the summed weight of every class among its `k` nearest bank entries.
    pub fn class_scores(&self, queries: Tensor<2>) -> Result<Vec<Vec<f64>>> {
        let [n, d] = queries.dims();
        let [m, bank_d] = self.bank.dims();
        if d != bank_d {
            return Err(Error::ShapeMismatch {
                context: "kNN queries vs bank".into(),
                expected: vec![n, bank_d],
                found: vec![n, d],
            });
        }
        let k = self.config.k.min(m);
        let queries = l2_normalize(queries);
        let bank_t = self.bank.clone().transpose();
        let mut scores = Vec::with_capacity(n);
        let mut order: Vec<usize> = Vec::with_capacity(m);
        for start in (0..n).step_by(QUERY_BLOCK) {
            let len = QUERY_BLOCK.min(n - start);
            let sims = queries.clone().narrow(0, start, len).matmul(bank_t.clone());
            let sims: Vec<f32> = sims
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::tensor_read("kNN similarities", e))?;
            for row in sims.chunks_exact(m) {
                order.clear();
                order.extend(0..m);
                if k < m {
                    order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
                }
                let mut class_score = vec![0.0f64; self.num_classes];
                for &j in &order[..k] {
                    class_score[self.labels[j]] +=
                        (f64::from(row[j]) / self.config.temperature).exp();
                }
                scores.push(class_score);
            }
        }
        Ok(scores)
    }

    /// Classes ranked by descending score for each query (ties keep the lower class first).
    pub fn ranked_classes(&self, queries: Tensor<2>) -> Result<Vec<Vec<usize>>> {
        Ok(self
            .class_scores(queries)?
            .into_iter()
            .map(|s| {
                let mut classes: Vec<usize> = (0..s.len()).collect();
                classes.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
                classes
            })
            .collect())
    }

    /// The predicted class of each query.
    pub fn predict(&self, queries: Tensor<2>) -> Result<Vec<usize>> {
        Ok(self
            .ranked_classes(queries)?
            .into_iter()
            .map(|r| r[0])
            .collect())
    }

    /// Top-1 accuracy and confusion matrix on labelled queries.
    pub fn evaluate(&self, queries: Tensor<2>, labels: &[usize]) -> Result<ClassificationReport> {
        let predicted = self.predict(queries)?;
        if predicted.len() != labels.len() {
            return Err(Error::ShapeMismatch {
                context: "kNN query labels".into(),
                expected: vec![predicted.len()],
                found: vec![labels.len()],
            });
        }
        Ok(ClassificationReport::from_predictions(
            &predicted,
            labels,
            self.num_classes,
        ))
    }
}
