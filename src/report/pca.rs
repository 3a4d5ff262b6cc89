//! The 2-D principal-component scatter of embeddings, coloured by class.

use plotters::prelude::*;

use super::{FONT, PngCanvas, plot_error};
use crate::error::{Error, Result};

/// Power-iteration steps per component: plenty for the top two of a few hundred dimensions.
const POWER_STEPS: usize = 200;

/// The projections of the rows of `x` (`n x d`, row-major) on their first two principal
/// components (of the centred rows), found by power iteration with deflation.
pub fn principal_components_2d(x: &[f32], n: usize, d: usize) -> Result<Vec<(f64, f64)>> {
    if n < 2 || d < 2 || x.len() != n * d {
        return Err(Error::MissingInput {
            context: "PCA".into(),
            what: format!("at least 2 points of 2 or more dimensions (got {n} x {d})"),
        });
    }
    let mut mean = vec![0.0f64; d];
    for row in x.chunks(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n as f64;
        }
    }
    let centred: Vec<Vec<f64>> = x
        .chunks(d)
        .map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(v, m)| f64::from(*v) - m)
                .collect()
        })
        .collect();
    let mut components: Vec<Vec<f64>> = Vec::new();
    for k in 0..2 {
        // A fixed, non-degenerate start keeps the result deterministic.
        let mut v: Vec<f64> = (0..d)
            .map(|i| 1.0 + ((i * 7 + k * 3) % 11) as f64)
            .collect();
        for _ in 0..POWER_STEPS {
            // w = X^T X v, with earlier components projected out.
            let mut w = vec![0.0; d];
            for row in &centred {
                let dot: f64 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
                for (wi, ri) in w.iter_mut().zip(row) {
                    *wi += dot * ri;
                }
            }
            for c in &components {
                let dot: f64 = w.iter().zip(c).map(|(a, b)| a * b).sum();
                for (wi, ci) in w.iter_mut().zip(c) {
                    *wi -= dot * ci;
                }
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            v = w.into_iter().map(|a| a / norm).collect();
        }
        components.push(v);
    }
    Ok(centred
        .iter()
        .map(|row| {
            let project = |c: &[f64]| row.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
            (project(&components[0]), project(&components[1]))
        })
        .collect())
}

/// The scatter of `points` coloured by `labels` (named by `classes`) into a PNG.
pub fn scatter(
    points: &[(f64, f64)],
    labels: &[usize],
    classes: &[String],
    title: &str,
    size: u32,
) -> Result<PngCanvas> {
    let mut canvas = PngCanvas::new(size + size / 3, size);
    {
        let root = canvas.area();
        root.fill(&WHITE).map_err(plot_error)?;
        let bounds = |pick: fn(&(f64, f64)) -> f64| {
            let (lo, hi) = points
                .iter()
                .map(pick)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                });
            let pad = 0.05 * (hi - lo).max(1e-9);
            (lo - pad)..(hi + pad)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(bounds(|p| p.0), bounds(|p| p.1))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("principal component 1")
            .y_desc("principal component 2")
            .label_style((FONT, 12))
            .draw()
            .map_err(plot_error)?;
        let classes_seen = labels.iter().copied().max().map_or(0, |m| m + 1);
        for class in 0..classes_seen {
            let colour = Palette99::pick(class).to_rgba();
            let members = points
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == class)
                .map(|(p, _)| Circle::new(*p, 3, colour.filled()));
            let name = classes
                .get(class)
                .cloned()
                .unwrap_or_else(|| class.to_string());
            chart
                .draw_series(members)
                .map_err(plot_error)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(canvas)
}
