//! MAE's reconstructions as a picture: for each image, the image, what the encoder saw (the
//! masked patches grey), and the reconstruction (the visible patches as they were, the masked
//! ones predicted by the decoder), as in the paper's figures.

use burn::tensor::Tensor;
use image::imageops::FilterType;
use image::{Rgb, RgbImage};

use crate::augment::{Masks, Normalize};
use crate::backbone::Encoder;
use crate::error::{Error, Result};
use crate::method::Mae;
use crate::method::mae::{patchify, unpatchify, visible_patches};

/// Side of one picture on the sheet.
const CELL: u32 = 96;
/// Space between pictures.
const GAP: u32 = 4;

/// The reconstruction sheet of `images` (`[B, 3, S, S]`, normalised with `normalize`) under
/// `masks`, by `encoder` and the MAE decoder of `mae`: one row per image, three columns.
pub fn reconstruction_sheet<E: Encoder>(
    encoder: &E,
    mae: &Mae,
    images: Tensor<4>,
    masks: &Masks,
    normalize: &Normalize,
) -> Result<RgbImage> {
    let tokens = encoder
        .encode_kept(images.clone(), masks.keep.clone())
        .ok_or_else(|| Error::MissingInput {
            context: "MAE reconstructions".into(),
            what: "tokens: the backbone must be a vision transformer".into(),
        })??;
    let target = patchify(images.clone(), mae.patch_size)?;
    let mut pred = mae.decode(tokens, masks)?;
    if mae.norm_pix_loss {
        // The decoder predicts normalised patches: give them the target patch's statistics.
        let mean = target.clone().mean_dim(2);
        let std = target.clone().var(2).add_scalar(1e-6).sqrt();
        pred = pred * std + mean;
    }
    let visible = visible_patches(masks)?;
    let [b, c, _, _] = images.dims();
    let patch_values = mae.patch_size * mae.patch_size * c;
    let keep_mask: Vec<f32> = visible
        .iter()
        .flatten()
        .flat_map(|&v| std::iter::repeat_n(if v { 1.0 } else { 0.0 }, patch_values))
        .collect();
    let n = masks.grid * masks.grid;
    let keep = Tensor::<3>::from_data(
        burn::tensor::TensorData::new(keep_mask, [b, n, patch_values]),
        &images.device(),
    );
    let mixed = target.clone() * keep.clone() + pred * keep.clone().neg().add_scalar(1.0);
    let reconstruction = unpatchify(mixed, mae.patch_size, c, masks.grid);
    let rows = [
        to_pictures(images, normalize, None)?,
        to_pictures(
            unpatchify(target * keep, mae.patch_size, c, masks.grid),
            normalize,
            Some((&visible, mae.patch_size, masks.grid)),
        )?,
        to_pictures(reconstruction, normalize, None)?,
    ];
    Ok(compose(&rows))
}

/// Each image of a normalised batch as RGB8; with `grey`, the masked patches are grey.
fn to_pictures(
    images: Tensor<4>,
    normalize: &Normalize,
    grey: Option<(&Vec<Vec<bool>>, usize, usize)>,
) -> Result<Vec<RgbImage>> {
    let [b, _, h, w] = images.dims();
    let values = images
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::tensor_read("MAE reconstructions", e))?;
    Ok((0..b)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let (x, y) = (x as usize, y as usize);
                if let Some((visible, p, grid)) = grey
                    && !visible[i][(y / p) * grid + x / p]
                {
                    return Rgb([128, 128, 128]);
                }
                Rgb(std::array::from_fn(|ch| {
                    let v = values[((i * 3 + ch) * h + y) * w + x];
                    let v = v * normalize.std[ch] + normalize.mean[ch];
                    (v.clamp(0.0, 1.0) * 255.0).round() as u8
                }))
            })
        })
        .collect())
}

/// The sheet: row `i` holds picture `i` of each column.
fn compose(columns: &[Vec<RgbImage>]) -> RgbImage {
    let rows = columns.first().map_or(0, Vec::len) as u32;
    let width = columns.len() as u32 * (CELL + GAP) + GAP;
    let height = rows * (CELL + GAP) + GAP;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (col, pictures) in columns.iter().enumerate() {
        for (row, picture) in pictures.iter().enumerate() {
            let cell = image::imageops::resize(picture, CELL, CELL, FilterType::Nearest);
            let x = GAP + col as u32 * (CELL + GAP);
            let y = GAP + row as u32 * (CELL + GAP);
            image::imageops::overlay(&mut sheet, &cell, x.into(), y.into());
        }
    }
    sheet
}
