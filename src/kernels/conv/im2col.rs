//! Unfolding an image into patch columns (im2col) and folding column gradients back (col2im).
//!
//! Row `(c * kernel_height + ki) * kernel_width + kj` of the column matrix holds, for every
//! output pixel `(oh, ow)`, the input value `x[c, oh * stride_h + ki - pad_h, ow * stride_w + kj
//! - pad_w]` (zero outside the image). The row order equals the weight's `[C_in, kh, kw]` order,
//! so the convolution is the matrix product `W[C_out, C_in*kh*kw] x cols[C_in*kh*kw, pixels]`.

use super::direct::copy_row;
use super::geometry::ConvGeometry;

/// Output positions `[lo, hi)` along one axis whose input index `o * stride + k - pad` falls
/// inside `[0, in_len)`.
fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    pad: usize,
    k: usize,
) -> (usize, usize) {
    let lo = if pad > k {
        (pad - k).div_ceil(stride)
    } else {
        0
    };
    let hi = if in_len + pad > k {
        ((in_len - 1 + pad - k) / stride + 1).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Writes the patches of one image (`[C_in, H, W]`) into columns `[offset, offset + pixels)` of
/// `cols`, a row-major matrix with `ld` columns and `patch_len` rows. Every written entry is
/// overwritten (padding becomes zero), so `cols` need not be cleared.
pub(crate) fn im2col(g: &ConvGeometry, image: &[f32], cols: &mut [f32], ld: usize, offset: usize) {
    let (in_h, in_w) = (g.in_height, g.in_width);
    let (out_h, out_w) = (g.out_height(), g.out_width());
    let [stride_h, stride_w] = g.stride;
    let [pad_h, pad_w] = g.padding;
    let pixels = out_h * out_w;
    // Stride 1 with "same" width: each row of the unfolded matrix is the image plane shifted by
    // a constant offset, so it is one copy plus zeroed borders instead of one copy per line.
    let shifted = g.stride == [1, 1] && out_w == in_w;
    for c in 0..g.in_channels {
        let plane = &image[c * in_h * in_w..][..in_h * in_w];
        for ki in 0..g.kernel_height {
            let (oh_lo, oh_hi) = valid_range(out_h, in_h, stride_h, pad_h, ki);
            for kj in 0..g.kernel_width {
                let (ow_lo, ow_hi) = valid_range(out_w, in_w, stride_w, pad_w, kj);
                let row = (c * g.kernel_height + ki) * g.kernel_width + kj;
                let dst = &mut cols[row * ld + offset..][..pixels];
                if shifted {
                    copy_shifted(
                        plane,
                        dst,
                        in_w,
                        (oh_lo, oh_hi),
                        (ow_lo, ow_hi),
                        ki as isize - pad_h as isize,
                        kj as isize - pad_w as isize,
                    );
                    continue;
                }
                dst[..oh_lo * out_w].fill(0.0);
                dst[oh_hi * out_w..].fill(0.0);
                for oh in oh_lo..oh_hi {
                    let ih = oh * stride_h + ki - pad_h;
                    let src = &plane[ih * in_w..][..in_w];
                    let line = &mut dst[oh * out_w..][..out_w];
                    line[..ow_lo].fill(0.0);
                    line[ow_hi..].fill(0.0);
                    if ow_lo == ow_hi {
                        continue;
                    }
                    let iw0 = ow_lo * stride_w + kj - pad_w;
                    if stride_w == 1 {
                        copy_row(&mut line[ow_lo..ow_hi], &src[iw0..iw0 + (ow_hi - ow_lo)]);
                    } else {
                        for (o, value) in line[ow_lo..ow_hi].iter_mut().enumerate() {
                            *value = src[iw0 + o * stride_w];
                        }
                    }
                }
            }
        }
    }
}

/// One row of the unfolded matrix for stride 1 and output width = input width: `dst[oh * w +
/// ow] = plane[(oh + di) * w + ow + dj]` inside `rows x cols` (the valid output ranges), zero
/// elsewhere.
fn copy_shifted(
    plane: &[f32],
    dst: &mut [f32],
    width: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    di: isize,
    dj: isize,
) {
    let (oh_lo, oh_hi) = rows;
    let (ow_lo, ow_hi) = cols;
    let start = oh_lo * width;
    let end = oh_hi * width;
    dst[..start].fill(0.0);
    dst[end..].fill(0.0);
    if start >= end {
        return;
    }
    let shift = di * width as isize + dj;
    // The copy range, clipped to the plane; what is clipped is a border zeroed below.
    let lo = (start as isize).max(-shift) as usize;
    let hi = ((end as isize).min(plane.len() as isize - shift)).max(lo as isize) as usize;
    let src_lo = (lo as isize + shift) as usize;
    copy_row(&mut dst[lo..hi], &plane[src_lo..src_lo + (hi - lo)]);
    dst[start..lo].fill(0.0);
    dst[hi..end].fill(0.0);
    // Columns whose input lies outside the row wrapped into the neighbouring row: zero them.
    if ow_lo > 0 || ow_hi < width {
        for oh in oh_lo..oh_hi {
            let line = &mut dst[oh * width..][..width];
            line[..ow_lo].fill(0.0);
            line[ow_hi..].fill(0.0);
        }
    }
}

/// Adds column gradients (columns `[offset, offset + pixels)` of `cols`, `ld` columns per row)
/// back into the image gradient `image` (`[C_in, H, W]`): the adjoint of [`im2col`].
pub(crate) fn col2im_add(
    g: &ConvGeometry,
    cols: &[f32],
    ld: usize,
    offset: usize,
    image: &mut [f32],
) {
    let (in_h, in_w) = (g.in_height, g.in_width);
    let (out_h, out_w) = (g.out_height(), g.out_width());
    let [stride_h, stride_w] = g.stride;
    let [pad_h, pad_w] = g.padding;
    let pixels = out_h * out_w;
    for c in 0..g.in_channels {
        let plane = &mut image[c * in_h * in_w..][..in_h * in_w];
        for ki in 0..g.kernel_height {
            let (oh_lo, oh_hi) = valid_range(out_h, in_h, stride_h, pad_h, ki);
            for kj in 0..g.kernel_width {
                let (ow_lo, ow_hi) = valid_range(out_w, in_w, stride_w, pad_w, kj);
                if ow_lo == ow_hi {
                    continue;
                }
                let row = (c * g.kernel_height + ki) * g.kernel_width + kj;
                let src = &cols[row * ld + offset..][..pixels];
                for oh in oh_lo..oh_hi {
                    let ih = oh * stride_h + ki - pad_h;
                    let dst = &mut plane[ih * in_w..][..in_w];
                    let line = &src[oh * out_w + ow_lo..oh * out_w + ow_hi];
                    let iw0 = ow_lo * stride_w + kj - pad_w;
                    if stride_w == 1 {
                        for (d, s) in dst[iw0..iw0 + line.len()].iter_mut().zip(line) {
                            *d += *s;
                        }
                    } else {
                        for (o, s) in line.iter().enumerate() {
                            dst[iw0 + o * stride_w] += *s;
                        }
                    }
                }
            }
        }
    }
}

/// Length of the zero-padded channel-last copy of one image that [`im2row`] takes as scratch:
/// `(H + 2·pad_h) · (W + 2·pad_w) · C_in`.
pub(crate) fn padded_nhwc_len(g: &ConvGeometry) -> usize {
    (g.in_height + 2 * g.padding[0]) * (g.in_width + 2 * g.padding[1]) * g.in_channels
}

/// Pixel-major patches (im2row) of one image: row `p` (output pixel `oh * out_width + ow`) of
/// `rows` holds the `kernel_height * kernel_width * C_in` inputs under the kernel in
/// `(ki, kj, c)` order, zero outside the image. Every entry of `rows[..pixels * patch_len]` is
/// written.
///
/// `padded` (at least [`padded_nhwc_len`] values) is scratch for a channel-last copy of the
/// image with its zero padding. In that copy the `kernel_width · C_in` inputs of one kernel row
/// are contiguous, so each patch is `kernel_height` copies with no bounds checks: on the narrow
/// layers (16 channels) this replaces nine 64-byte copies per pixel, each behind a border test.
pub(crate) fn im2row(g: &ConvGeometry, image: &[f32], padded: &mut [f32], rows: &mut [f32]) {
    let (out_h, out_w) = (g.out_height(), g.out_width());
    let [stride_h, stride_w] = g.stride;
    let padded_w = g.in_width + 2 * g.padding[1];
    pad_channel_last(g, image, padded);
    let channels = g.in_channels;
    let span = g.kernel_width * channels;
    for oh in 0..out_h {
        for ow in 0..out_w {
            let row = &mut rows[(oh * out_w + ow) * g.patch_len()..][..g.patch_len()];
            for (ki, kernel_row) in row.chunks_exact_mut(span).enumerate() {
                let start = ((oh * stride_h + ki) * padded_w + ow * stride_w) * channels;
                kernel_row.copy_from_slice(&padded[start..start + span]);
            }
        }
    }
}

/// Writes `image` (`[C_in, H, W]`) channel-last into `padded` (`[H + 2·pad_h, W + 2·pad_w,
/// C_in]`) with zeros in the padding.
fn pad_channel_last(g: &ConvGeometry, image: &[f32], padded: &mut [f32]) {
    let (in_h, in_w, channels) = (g.in_height, g.in_width, g.in_channels);
    let [pad_h, pad_w] = g.padding;
    let padded_w = in_w + 2 * pad_w;
    let padded = &mut padded[..padded_nhwc_len(g)];
    let line = padded_w * channels;
    padded[..pad_h * line].fill(0.0);
    padded[(pad_h + in_h) * line..].fill(0.0);
    let plane = in_h * in_w;
    // Blocks of 16 pixels (by all channels) keep both sides of the transpose in cache.
    const BLOCK: usize = 16;
    for ih in 0..in_h {
        let dst = &mut padded[(pad_h + ih) * line..][..line];
        dst[..pad_w * channels].fill(0.0);
        dst[(pad_w + in_w) * channels..].fill(0.0);
        let interior = &mut dst[pad_w * channels..][..in_w * channels];
        for w0 in (0..in_w).step_by(BLOCK) {
            let w1 = (w0 + BLOCK).min(in_w);
            for c in 0..channels {
                let src = &image[c * plane + ih * in_w..][w0..w1];
                for (offset, value) in src.iter().enumerate() {
                    interior[(w0 + offset) * channels + c] = *value;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for in_len in 1..9 {
            for k in 0..7 {
                for pad in 0..4 {
                    for stride in 1..4 {
                        if in_len + 2 * pad < k + 1 {
                            continue;
                        }
                        let out_len = (in_len + 2 * pad - (k + 1)) / stride + 1;
                        let inside: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = (o * stride + k) as isize - pad as isize;
                                i >= 0 && (i as usize) < in_len
                            })
                            .collect();
                        let (lo, hi) = valid_range(out_len, in_len, stride, pad, k);
                        assert_eq!((lo..hi).collect::<Vec<_>>(), inside);
                    }
                }
            }
        }
    }

    #[test]
    fn im2row_matches_the_definition_with_a_dirty_scratch() {
        let shapes = [
            // (channels, height, width, kernel h, kernel w, stride, padding h, padding w)
            (3, 5, 7, 3, 3, 1, 1, 1),
            (2, 6, 5, 3, 2, 2, 0, 1),
            (16, 4, 4, 3, 3, 1, 2, 0),
            (1, 3, 3, 1, 1, 1, 0, 0),
        ];
        for (channels, h, w, kh, kw, stride, pad_h, pad_w) in shapes {
            let g = ConvGeometry {
                batch: 1,
                in_channels: channels,
                in_height: h,
                in_width: w,
                out_channels: 1,
                kernel_height: kh,
                kernel_width: kw,
                stride: [stride, stride],
                padding: [pad_h, pad_w],
            };
            let image: Vec<f32> = (0..channels * h * w).map(|i| i as f32 + 1.0).collect();
            let mut padded = vec![f32::NAN; padded_nhwc_len(&g)];
            let mut rows = vec![f32::NAN; g.out_pixels() * g.patch_len()];
            im2row(&g, &image, &mut padded, &mut rows);
            for oh in 0..g.out_height() {
                for ow in 0..g.out_width() {
                    for ki in 0..kh {
                        for kj in 0..kw {
                            for c in 0..channels {
                                let ih = (oh * stride + ki) as isize - pad_h as isize;
                                let iw = (ow * stride + kj) as isize - pad_w as isize;
                                let inside =
                                    (0..h as isize).contains(&ih) && (0..w as isize).contains(&iw);
                                let expected = if inside {
                                    image[(c * h + ih as usize) * w + iw as usize]
                                } else {
                                    0.0
                                };
                                let p = oh * g.out_width() + ow;
                                let got = rows[p * g.patch_len() + (ki * kw + kj) * channels + c];
                                assert_eq!(got, expected, "{g:?} at ({oh},{ow},{ki},{kj},{c})");
                            }
                        }
                    }
                }
            }
        }
    }
}
