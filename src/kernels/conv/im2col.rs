//! Unfolding an image into patch columns (im2col) and folding column gradients back (col2im).
//!
//! Row `(c * kernel_height + ki) * kernel_width + kj` of the column matrix holds, for every
//! output pixel `(oh, ow)`, the input value `x[c, oh * stride_h + ki - pad_h, ow * stride_w + kj
//! - pad_w]` (zero outside the image). The row order equals the weight's `[C_in, kh, kw]` order,
//! so the convolution is the matrix product `W[C_out, C_in*kh*kw] x cols[C_in*kh*kw, pixels]`.

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
                        line[ow_lo..ow_hi].copy_from_slice(&src[iw0..iw0 + (ow_hi - ow_lo)]);
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
    dst[lo..hi].copy_from_slice(&plane[src_lo..src_lo + (hi - lo)]);
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

/// Pixel-major patches (im2row) of one image: row `p` (output pixel `oh * out_width + ow`) of
/// `rows` holds the `kernel_height * kernel_width * C_in` inputs under the kernel in
/// `(ki, kj, c)` order, zero outside the image. `nhwc` is scratch for the channel-last copy of
/// the image (`H * W * C_in` values). Every entry of `rows[..pixels * patch_len]` is written.
pub(crate) fn im2row(g: &ConvGeometry, image: &[f32], nhwc: &mut [f32], rows: &mut [f32]) {
    let (in_h, in_w, channels) = (g.in_height, g.in_width, g.in_channels);
    let (out_h, out_w) = (g.out_height(), g.out_width());
    let [stride_h, stride_w] = g.stride;
    let [pad_h, pad_w] = g.padding;
    let patch = g.patch_len();
    let plane = in_h * in_w;
    // Channel-last copy, in blocks of 16 pixels x 16 channels to keep both sides in cache.
    const BLOCK: usize = 16;
    for p0 in (0..plane).step_by(BLOCK) {
        let p1 = (p0 + BLOCK).min(plane);
        for c0 in (0..channels).step_by(BLOCK) {
            let c1 = (c0 + BLOCK).min(channels);
            for c in c0..c1 {
                let src = &image[c * plane..][p0..p1];
                for (offset, value) in src.iter().enumerate() {
                    nhwc[(p0 + offset) * channels + c] = *value;
                }
            }
        }
    }
    for oh in 0..out_h {
        for ow in 0..out_w {
            let row = &mut rows[(oh * out_w + ow) * patch..][..patch];
            for ki in 0..g.kernel_height {
                let ih = (oh * stride_h + ki) as isize - pad_h as isize;
                for kj in 0..g.kernel_width {
                    let iw = (ow * stride_w + kj) as isize - pad_w as isize;
                    let dst = &mut row[(ki * g.kernel_width + kj) * channels..][..channels];
                    if ih < 0 || iw < 0 || ih >= in_h as isize || iw >= in_w as isize {
                        dst.fill(0.0);
                    } else {
                        let pixel = ih as usize * in_w + iw as usize;
                        dst.copy_from_slice(&nhwc[pixel * channels..][..channels]);
                    }
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
}
