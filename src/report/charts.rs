//! The training curves: six panels (loss, learning rate, embedding std, effective rank, energy
//! gap, kNN top-1) for one run or overlaid for several, with the collapse thresholds drawn.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::series::RunSeries;
use super::{FONT, PngCanvas, plot_error};
use crate::error::Result;

/// Where the collapse monitor warns, drawn as dashed lines.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Thresholds {
    /// The embedding-std floor (`min_relative_std / sqrt(d)`).
    pub embedding_std: Option<f64>,
    /// The effective-rank floor.
    pub effective_rank: Option<f64>,
    /// The energy-gap floor.
    pub energy_gap: Option<f64>,
}

/// The colour of run `i` in overlays.
pub fn run_colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 4] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    COLOURS[i % COLOURS.len()]
}

/// One panel's content.
struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    points: Vec<&'a [(f64, f64)]>,
    threshold: Option<f64>,
}

/// Draws the six panels for `runs` into a `width x height` PNG.
pub fn training_curves(
    runs: &[RunSeries],
    thresholds: &Thresholds,
    width: u32,
    height: u32,
) -> Result<PngCanvas> {
    let mut canvas = PngCanvas::new(width, height);
    {
        let root = canvas.area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = [
            panel("loss", "step", runs, |r| &r.loss, None),
            panel("learning rate", "step", runs, |r| &r.lr, None),
            panel(
                "embedding std (normalised)",
                "step",
                runs,
                |r| &r.embedding_std,
                thresholds.embedding_std,
            ),
            panel(
                "effective rank (RankMe)",
                "step",
                runs,
                |r| &r.effective_rank,
                thresholds.effective_rank,
            ),
            panel(
                "energy gap",
                "step",
                runs,
                |r| &r.energy_gap,
                thresholds.energy_gap,
            ),
            panel("kNN top-1 (%)", "epoch", runs, |r| &r.knn_top1, None),
        ];
        for (area, p) in root.split_evenly((3, 2)).iter().zip(&panels) {
            draw_panel(area, p, runs)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(canvas)
}

fn panel<'a>(
    title: &'a str,
    x_label: &'a str,
    runs: &'a [RunSeries],
    pick: impl Fn(&'a RunSeries) -> &'a Vec<(f64, f64)>,
    threshold: Option<f64>,
) -> Panel<'a> {
    Panel {
        title,
        x_label,
        points: runs.iter().map(|r| pick(r).as_slice()).collect(),
        threshold,
    }
}

/// The `(min, max)` of the points' x and y (with the threshold in y), padded so a flat line
/// still has a range.
fn ranges(p: &Panel) -> Option<((f64, f64), (f64, f64))> {
    let all: Vec<(f64, f64)> = p.points.iter().flat_map(|s| s.iter().copied()).collect();
    if all.is_empty() {
        return None;
    }
    let bounds = |values: &mut dyn Iterator<Item = f64>| {
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
    };
    let (x0, x1) = bounds(&mut all.iter().map(|p| p.0));
    let (y0, y1) = bounds(&mut all.iter().map(|p| p.1).chain(p.threshold));
    let pad = |lo: f64, hi: f64| {
        let span = hi - lo;
        if span <= 1e-9 * hi.abs().max(1.0) {
            // One value: a window around it, so the axis has distinct ticks.
            let half = (0.1 * hi.abs()).max(0.5);
            (lo - half, hi + half)
        } else {
            (lo - 0.05 * span, hi + 0.05 * span)
        }
    };
    Some((pad(x0, x1), pad(y0, y1)))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    runs: &[RunSeries],
) -> Result<()> {
    let Some(((x0, x1), (y0, y1))) = ranges(p) else {
        area.titled(&format!("{}: not measured", p.title), (FONT, 18))
            .map_err(plot_error)?;
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, (FONT, 18))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(58)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label)
        .label_style((FONT, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)?;
    for (i, (points, run)) in p.points.iter().zip(runs).enumerate() {
        let colour = run_colour(i);
        let line = LineSeries::new(points.iter().copied(), colour.stroke_width(2));
        let series = chart.draw_series(line).map_err(plot_error)?;
        if runs.len() > 1 {
            series.label(run.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        }
        if points.len() == 1 {
            let dot = Circle::new(points[0], 3, colour.filled());
            chart
                .draw_series(std::iter::once(dot))
                .map_err(plot_error)?;
        }
    }
    if let Some(t) = p.threshold {
        let dashed = DashedLineSeries::new(vec![(x0, t), (x1, t)], 6, 4, BLACK.stroke_width(1));
        chart
            .draw_series(dashed)
            .map_err(plot_error)?
            .label("collapse threshold")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    }
    if runs.len() > 1 || p.threshold.is_some() {
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    Ok(())
}
