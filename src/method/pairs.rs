//! Helpers shared by the losses: view-count checks and sums over pairs of views.

use burn::tensor::Tensor;

use crate::check;
use crate::error::Error;

/// Returns `list` if it has at least `minimum` views, else a [`Error::MissingInput`].
pub(crate) fn require_views<'a>(
    method: &str,
    what: &str,
    list: &'a [Tensor<2>],
    minimum: usize,
) -> crate::Result<&'a [Tensor<2>]> {
    if list.len() >= minimum {
        Ok(list)
    } else {
        Err(Error::MissingInput {
            context: format!("{method} loss"),
            what: format!("{what}: needs {minimum} views, got {}", list.len()),
        })
    }
}

/// Sum of `term(left_i, right_j)` over all ordered pairs of distinct views `i != j`, with the
/// number of pairs. Both lists must have the same length (at least 2) and matching shapes.
pub(crate) fn sum_over_ordered_pairs(
    method: &str,
    left: &[Tensor<2>],
    right: &[Tensor<2>],
    term: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<1>,
) -> crate::Result<(Tensor<1>, usize)> {
    let pairs = check_pairs(method, left, right)?;
    let mut total: Option<Tensor<1>> = None;
    for (i, l) in left.iter().enumerate() {
        for (j, r) in right.iter().enumerate() {
            if i == j {
                continue;
            }
            check::same_shape(
                || format!("{method} loss: view {j} of the second input against view {i}"),
                l,
                r,
            )?;
            let value = term(l.clone(), r.clone());
            total = Some(match total {
                Some(t) => t + value,
                None => value,
            });
        }
    }
    let total = total.ok_or_else(|| Error::MissingInput {
        context: format!("{method} loss"),
        what: "two views".into(),
    })?;
    Ok((total, pairs))
}

/// Checks two per-view lists have the same length (at least 2) and returns the number of
/// ordered pairs of distinct views.
fn check_pairs(method: &str, a: &[Tensor<2>], b: &[Tensor<2>]) -> crate::Result<usize> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(Error::MissingInput {
            context: format!("{method} loss"),
            what: format!(
                "matching views: needs the same number (2 or more) on both sides, got {} and {}",
                a.len(),
                b.len()
            ),
        });
    }
    Ok(a.len() * (a.len() - 1))
}

/// Mean of `loss(z_i, z_j)` over all pairs `i < j` of views.
pub(crate) fn mean_over_view_pairs(
    views: &[Tensor<2>],
    loss: impl Fn(Tensor<2>, Tensor<2>) -> crate::Result<Tensor<1>>,
) -> crate::Result<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    let mut pairs = 0usize;
    for i in 0..views.len() {
        for j in i + 1..views.len() {
            let term = loss(views[i].clone(), views[j].clone())?;
            pairs += 1;
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
    }
    match total {
        Some(t) if pairs > 1 => Ok(t.div_scalar(pairs as f64)),
        Some(t) => Ok(t),
        None => Err(Error::MissingInput {
            context: "loss".into(),
            what: "two views".into(),
        }),
    }
}
