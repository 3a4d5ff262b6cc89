//! The retrieval sheet: for a few query images, their nearest training images by energy, with
//! the energy under each.

use image::RgbImage;
use image::imageops::FilterType;
use plotters::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{FONT, PngCanvas, plot_error};
use crate::data::ImageDataset;
use crate::error::Result;

/// Side of each thumbnail, in pixels.
const THUMB: u32 = 64;
/// Space between thumbnails.
const GAP: u32 = 6;
/// Height of the text line under each thumbnail.
const TEXT: u32 = 18;

/// One row of the sheet: a query and its neighbours with their energies, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    /// The query image's index in the query set.
    pub query: usize,
    /// `(bank index, energy)` of the nearest bank images.
    pub neighbours: Vec<(usize, f32)>,
}

/// `count` query indices out of `len`, drawn with `seed` (distinct, in ascending order).
pub fn pick_queries(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, len, count.min(len)).into_vec();
    picked.sort_unstable();
    picked
}

/// The `k` nearest bank rows of each query row by cosine energy `1 - cos` (rows L2-normalised,
/// `dim` values each). With `same_set` (the queries are bank images), a query's own row is
/// left out.
pub fn nearest(
    bank: &[f32],
    queries: &[f32],
    query_ids: &[usize],
    dim: usize,
    k: usize,
    same_set: bool,
) -> Vec<Retrieval> {
    let unit = |row: &[f32]| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter().map(|v| v / norm).collect::<Vec<f32>>()
    };
    let bank: Vec<Vec<f32>> = bank.chunks(dim).map(unit).collect();
    queries
        .chunks(dim)
        .zip(query_ids)
        .map(|(q, &query)| {
            let q = unit(q);
            let mut energies: Vec<(usize, f32)> = bank
                .iter()
                .enumerate()
                .filter(|(i, _)| !(same_set && *i == query))
                .map(|(i, b)| {
                    let cos = q.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
                    // Rounding can put a near-identical pair a hair below zero.
                    (i, (1.0 - cos).max(0.0))
                })
                .collect();
            energies.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            energies.truncate(k);
            Retrieval {
                query,
                neighbours: energies,
            }
        })
        .collect()
}

/// A square thumbnail of `image`: the central square, resized (small images by whole-pixel
/// repetition, which keeps them sharp and the PNG small).
fn thumbnail(image: &RgbImage) -> RgbImage {
    let side = image.width().min(image.height());
    let x = (image.width() - side) / 2;
    let y = (image.height() - side) / 2;
    let square = image::imageops::crop_imm(image, x, y, side, side).to_image();
    let filter = if side <= THUMB {
        FilterType::Nearest
    } else {
        FilterType::Triangle
    };
    image::imageops::resize(&square, THUMB, THUMB, filter)
}

/// The sheet: one row per retrieval, the query then its neighbours, energies underneath.
pub fn sheet(
    rows: &[Retrieval],
    queries: &dyn ImageDataset,
    bank: &dyn ImageDataset,
) -> Result<PngCanvas> {
    let columns = 1 + rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0) as u32;
    let cell_w = THUMB + GAP;
    let cell_h = THUMB + TEXT + GAP;
    let width = GAP + columns * cell_w + GAP;
    let height = TEXT + GAP + rows.len() as u32 * cell_h;
    let mut pixels = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut labels: Vec<(String, (i32, i32))> = vec![
        ("query".into(), (GAP as i32, 2)),
        (
            "nearest training images (energy 1 - cos, lowest first)".into(),
            ((GAP + cell_w + GAP) as i32, 2),
        ),
    ];
    for (r, row) in rows.iter().enumerate() {
        let top = TEXT + GAP + r as u32 * cell_h;
        let query = thumbnail(queries.image(row.query)?.as_ref());
        image::imageops::overlay(&mut pixels, &query, GAP.into(), top.into());
        for (c, (index, energy)) in row.neighbours.iter().enumerate() {
            // A thin gap after the query column sets it apart.
            let left = GAP + GAP + (c as u32 + 1) * cell_w;
            let image = thumbnail(bank.image(*index)?.as_ref());
            image::imageops::overlay(&mut pixels, &image, left.into(), top.into());
            labels.push((
                format!("{energy:.3}"),
                (left as i32, (top + THUMB + 2) as i32),
            ));
        }
    }
    let mut canvas = PngCanvas::from_image(pixels);
    {
        let area = canvas.area();
        for (text, at) in &labels {
            area.draw_text(text, &(FONT, 14).into_font().color(&BLACK), *at)
                .map_err(plot_error)?;
        }
        area.present().map_err(plot_error)?;
    }
    Ok(canvas)
}
