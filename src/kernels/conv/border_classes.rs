//! The output pixels of a padded convolution grouped by which kernel taps fall inside the
//! image, so that a register tile of pixels skips the taps that only read padding zeros.
//!
//! Output pixel `(i, j)` of a layer with stride `s` and padding `p` reads input row
//! `i·s + a - p` through kernel row `a`, which is inside the image for `0 <= i·s + a - p < H`:
//! its valid taps form a rectangle `[a0, a1) x [b0, b1)` of the kernel. With 3x3 kernels and
//! padding 1, a border pixel has 6 valid taps of 9 and a corner pixel 4: a zero-padded direct
//! kernel spends 16% of an 8 x 8 layer's multiply-adds on zeros, and 31% of a 4 x 4 layer's
//! (oneDNN skips them). Pixels with the same rectangle form a class. [`PixelTiles`] fills tiles
//! class by class across several images (a 4 x 4 map has one top-left pixel per image, a tile
//! holds 6-8), and each tile runs the taps of the smallest rectangle that holds its pixels'
//! rectangles: a tile that straddles two classes stays exact, its extra taps reading zeros.
//! The weight gradient sums over pixels for each tap, so [`TapPixels`] lists, for each tap,
//! exactly the pixels that read the image through it.

use std::ops::Range;

use super::geometry::ConvGeometry;

/// The kernel positions along one axis whose input falls inside the image: `[start, end)`,
/// `(0, 0)` where none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    const EMPTY: Self = Self { start: 0, end: 0 };

    /// Positions `a < kernel` with `0 <= out·stride + a - pad < input`.
    fn valid(out: usize, stride: usize, pad: usize, kernel: usize, input: usize) -> Self {
        let first = out * stride;
        let start = pad.saturating_sub(first).min(kernel);
        let end = (input + pad).saturating_sub(first).min(kernel);
        if start < end {
            Self { start, end }
        } else {
            Self::EMPTY
        }
    }

    /// For input position `h` of a layer with `out` outputs along the axis: its parity `r = (h
    /// + pad) mod stride`, the output `i0 = (h + pad) / stride`, and the `k` for which kernel
    /// position `r + k·stride` (inside the kernel) maps output `i0 - k` (inside the map) onto
    /// `h`.
    fn reaching(
        h: usize,
        stride: usize,
        pad: usize,
        kernel: usize,
        out: usize,
    ) -> (usize, usize, Self) {
        let (r, first) = ((h + pad) % stride, (h + pad) / stride);
        let in_kernel = kernel.saturating_sub(r).div_ceil(stride);
        let start = (first + 1).saturating_sub(out);
        let end = in_kernel.min(first + 1);
        let span = if start < end {
            Self { start, end }
        } else {
            Self::EMPTY
        };
        (r, first, span)
    }

    fn is_empty(self) -> bool {
        self.start >= self.end
    }

    fn contains(self, position: usize) -> bool {
        (self.start..self.end).contains(&position)
    }

    /// The smallest span holding both.
    fn union(self, other: Self) -> Self {
        match (self.is_empty(), other.is_empty()) {
            (true, _) => other,
            (_, true) => self,
            _ => Self {
                start: self.start.min(other.start),
                end: self.end.max(other.end),
            },
        }
    }
}

/// The valid taps of an output pixel: kernel rows by kernel columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TapBox {
    rows: Span,
    cols: Span,
}

impl TapBox {
    const EMPTY: Self = Self {
        rows: Span::EMPTY,
        cols: Span::EMPTY,
    };

    fn union(self, other: Self) -> Self {
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        Self {
            rows: self.rows.union(other.rows),
            cols: self.cols.union(other.cols),
        }
    }

    fn is_empty(self) -> bool {
        self.rows.is_empty() || self.cols.is_empty()
    }

    /// The same taps, or [`Self::EMPTY`] if there are none (so that every pixel reading only
    /// padding is in one class).
    fn or_empty(self) -> Self {
        if self.is_empty() { Self::EMPTY } else { self }
    }
}

/// One group of images' register tiles of `P` output pixels each, filled class by class (see
/// the module docs), and the kernel taps each tile runs.
pub(super) struct PixelTiles<const P: usize> {
    /// Per tile, where each pixel's window starts in the group's padded planes: `n ·
    /// image_len + i·s·cols + j·s` for pixel `(i, j)` of image `n`. The last tile repeats its
    /// last pixel where the pixels run out.
    pub(super) offsets: Vec<[usize; P]>,
    /// Per tile, each pixel's row in the group's channel-last sums: `n · H_out·W_out + i ·
    /// W_out + j`.
    pub(super) rows: Vec<[usize; P]>,
    /// Per tile, its taps: a range of [`Self::taps`].
    pub(super) tap_ranges: Vec<Range<usize>>,
    /// `(a · cols + b, a · kw + b)` for tap `(a, b)`: where it reads in a padded plane, relative
    /// to a pixel's window, and its index among the kernel's taps (the weights' order).
    pub(super) taps: Vec<(usize, usize)>,
    /// The largest offset a tile reads in one channel's plane of the group: the largest window
    /// start plus the largest tap offset.
    pub(super) last_read: usize,
}

impl<const P: usize> PixelTiles<P> {
    /// The tiles of `images` images of `g` on padded planes of `cols` columns, `image_len`
    /// values apart from one image to the next.
    pub(super) fn new(g: &ConvGeometry, cols: usize, image_len: usize, images: usize) -> Self {
        let (out_height, out_width) = (g.out_height(), g.out_width());
        let [stride_h, stride_w] = g.stride;
        let [pad_h, pad_w] = g.padding;
        let pixels: Vec<(TapBox, usize)> = (0..out_height * out_width)
            .map(|p| {
                let (i, j) = (p / out_width, p % out_width);
                let rows = Span::valid(i, stride_h, pad_h, g.kernel_height, g.in_height);
                let cols = Span::valid(j, stride_w, pad_w, g.kernel_width, g.in_width);
                (TapBox { rows, cols }.or_empty(), p)
            })
            .collect();
        let window = |p: usize| (p / out_width) * stride_h * cols + (p % out_width) * stride_w;
        let mut tiles = Self::empty();
        let kernel_width = g.kernel_width;
        tiles.push_run(
            pixels,
            out_height * out_width,
            images,
            image_len,
            window,
            |a, b| (a * cols + b, a * kernel_width + b),
        );
        tiles
    }

    /// The tiles of the input gradient of `g` (stride `s`), read from the output gradient on
    /// padded planes of `cols` columns, `image_len` values apart, with `top` rows and `left`
    /// columns of zeros before the gradient (at least `(kh - 1) / s` and `(kw - 1) / s`) and
    /// enough after it.
    ///
    /// Input row `h` receives gradient through the kernel rows `a = r + k·s` (`r = (h + p) mod
    /// s`) from output rows `i0 - k` (`i0 = (h + p) / s`) inside the map: the tap `k` of a
    /// pixel of row parity `r` reads `top - k` rows above its window `i0 + top`. So pixels of
    /// different parities use a weight at different offsets, and each parity is tiled on its
    /// own; within one, the valid `k` form a span as in the forward pass.
    pub(super) fn transposed(
        g: &ConvGeometry,
        cols: usize,
        image_len: usize,
        images: usize,
        [top, left]: [usize; 2],
    ) -> Self {
        let (height, width) = (g.in_height, g.in_width);
        let [stride_h, stride_w] = g.stride;
        let [pad_h, pad_w] = g.padding;
        let (out_height, out_width) = (g.out_height(), g.out_width());
        assert!(
            top >= (g.kernel_height - 1) / stride_h && left >= (g.kernel_width - 1) / stride_w,
            "transposed tiles: {top} x {left} rows and columns of zeros before the gradient"
        );
        let rows: Vec<_> = (0..height)
            .map(|h| Span::reaching(h, stride_h, pad_h, g.kernel_height, out_height))
            .collect();
        let columns: Vec<_> = (0..width)
            .map(|w| Span::reaching(w, stride_w, pad_w, g.kernel_width, out_width))
            .collect();
        let mut tiles = Self::empty();
        for r in 0..stride_h {
            for rc in 0..stride_w {
                let pixels: Vec<(TapBox, usize)> = (0..height * width)
                    .filter(|p| rows[p / width].0 == r && columns[p % width].0 == rc)
                    .map(|p| {
                        let tap_box = TapBox {
                            rows: rows[p / width].2,
                            cols: columns[p % width].2,
                        };
                        (tap_box.or_empty(), p)
                    })
                    .collect();
                if pixels.is_empty() {
                    continue;
                }
                let window = |p: usize| rows[p / width].1 * cols + columns[p % width].1;
                let kernel_width = g.kernel_width;
                tiles.push_run(pixels, height * width, images, image_len, window, |k, l| {
                    let offset = (top - k) * cols + (left - l);
                    (
                        offset,
                        (r + k * stride_h) * kernel_width + rc + l * stride_w,
                    )
                });
            }
        }
        tiles
    }

    fn empty() -> Self {
        Self {
            offsets: Vec::new(),
            rows: Vec::new(),
            tap_ranges: Vec::new(),
            taps: Vec::new(),
            last_read: 0,
        }
    }

    /// Tiles of `pixels` (`(valid taps, index in a map of map_pixels`) of `images` images, class by class
    /// and image by image, each tile running the taps `tap(a, b)` (offset, weight index) of the
    /// rectangle holding its pixels' rectangles; `window(p)` is where pixel `p` reads in its
    /// image's planes. The last tile repeats its last pixel where the pixels run out.
    fn push_run(
        &mut self,
        mut pixels: Vec<(TapBox, usize)>,
        map_pixels: usize,
        images: usize,
        image_len: usize,
        window: impl Fn(usize) -> usize,
        tap: impl Fn(usize, usize) -> (usize, usize),
    ) {
        // Stable: within a class the pixels keep their order in the map.
        pixels.sort_by_key(|&(tap_box, _)| tap_box);
        let mut entries = Vec::with_capacity(images * pixels.len());
        for class in pixels.chunk_by(|a, b| a.0 == b.0) {
            for n in 0..images {
                entries.extend(
                    class.iter().map(|&(tap_box, p)| {
                        (n * image_len + window(p), n * map_pixels + p, tap_box)
                    }),
                );
            }
        }
        for chunk in entries.chunks(P) {
            self.push(chunk, &tap);
        }
    }

    /// One tile of up to `P` pixels `(window start, sums row, valid taps)`.
    fn push(
        &mut self,
        pixels: &[(usize, usize, TapBox)],
        tap: &impl Fn(usize, usize) -> (usize, usize),
    ) {
        let last = *pixels.last().expect("a tile has pixels");
        let pixel = |k: usize| pixels.get(k).copied().unwrap_or(last);
        self.offsets.push(std::array::from_fn(|k| pixel(k).0));
        self.rows.push(std::array::from_fn(|k| pixel(k).1));
        let tap_box = pixels.iter().fold(TapBox::EMPTY, |acc, p| acc.union(p.2));
        let start = self.taps.len();
        if !tap_box.is_empty() {
            for a in tap_box.rows.start..tap_box.rows.end {
                for b in tap_box.cols.start..tap_box.cols.end {
                    self.taps.push(tap(a, b));
                }
            }
        }
        self.tap_ranges.push(start..self.taps.len());
        let widest_tap = self.taps[start..].iter().map(|t| t.0).max().unwrap_or(0);
        let farthest_window = pixels.iter().map(|p| p.0).max().unwrap_or(0);
        self.last_read = self.last_read.max(farthest_window + widest_tap);
    }
}

/// For each kernel tap, the output pixels of a group of images that read inside the image
/// through it, for the weight gradient (which sums over pixels per tap, so each tap skips
/// exactly its own padding).
pub(super) struct TapPixels {
    /// For each tap `(a, b)` in the kernel's order: `a · cols + b`, where it reads relative to a
    /// pixel's window, and its pixels `(row · grad_stride, window start)` in the order of the
    /// images and the map, `row = n · H_out·W_out + i · W_out + j` and the window `n ·
    /// image_len + i·s·cols + j·s`.
    pub(super) taps: Vec<(usize, Vec<(usize, usize)>)>,
    /// The largest offset read in one channel's plane of the group (window plus tap).
    pub(super) last_read: usize,
    /// The largest `row · grad_stride`.
    pub(super) last_row: usize,
}

impl TapPixels {
    /// The lists of `images` images of `g` on padded planes of `cols` columns, `image_len`
    /// values apart, with gradient rows `grad_stride` values apart.
    pub(super) fn new(
        g: &ConvGeometry,
        cols: usize,
        image_len: usize,
        grad_stride: usize,
        images: usize,
    ) -> Self {
        let (out_height, out_width) = (g.out_height(), g.out_width());
        let [stride_h, stride_w] = g.stride;
        let [pad_h, pad_w] = g.padding;
        let row_spans: Vec<Span> = (0..out_height)
            .map(|i| Span::valid(i, stride_h, pad_h, g.kernel_height, g.in_height))
            .collect();
        let col_spans: Vec<Span> = (0..out_width)
            .map(|j| Span::valid(j, stride_w, pad_w, g.kernel_width, g.in_width))
            .collect();
        let (mut last_read, mut last_row) = (0, 0);
        let mut taps = Vec::with_capacity(g.kernel_height * g.kernel_width);
        for a in 0..g.kernel_height {
            for b in 0..g.kernel_width {
                let tap = a * cols + b;
                let mut pixels = Vec::new();
                for n in 0..images {
                    for (i, _) in row_spans.iter().enumerate().filter(|(_, s)| s.contains(a)) {
                        for (j, _) in col_spans.iter().enumerate().filter(|(_, s)| s.contains(b)) {
                            let row = (n * out_height + i) * out_width + j;
                            let window = n * image_len + i * stride_h * cols + j * stride_w;
                            last_read = last_read.max(window + tap);
                            last_row = last_row.max(row * grad_stride);
                            pixels.push((row * grad_stride, window));
                        }
                    }
                }
                taps.push((tap, pixels));
            }
        }
        Self {
            taps,
            last_read,
            last_row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(side: usize, kernel: usize, stride: usize, padding: usize) -> ConvGeometry {
        ConvGeometry {
            batch: 8,
            in_channels: 1,
            in_height: side,
            in_width: side,
            out_channels: 1,
            kernel_height: kernel,
            kernel_width: kernel,
            stride: [stride, stride],
            padding: [padding, padding],
        }
    }

    /// Multiply-adds per output channel and input channel: taps summed over the tiles' pixels.
    fn products<const P: usize>(tiles: &PixelTiles<P>) -> usize {
        tiles.tap_ranges.iter().map(|r| r.len() * P).sum()
    }

    #[test]
    fn spans_are_the_taps_inside_the_image() {
        // 3x3, padding 1, a 4-pixel axis: the first output skips kernel row 0, the last row 2.
        assert_eq!(Span::valid(0, 1, 1, 3, 4), Span { start: 1, end: 3 });
        assert_eq!(Span::valid(1, 1, 1, 3, 4), Span { start: 0, end: 3 });
        assert_eq!(Span::valid(3, 1, 1, 3, 4), Span { start: 0, end: 2 });
        // Stride 2 from 8 to 4: only the first output reads padding.
        assert_eq!(Span::valid(3, 2, 1, 3, 8), Span { start: 0, end: 3 });
        // A 1x1 kernel with padding 1 on the border reads nothing but padding.
        assert_eq!(Span::valid(0, 1, 1, 1, 4), Span::EMPTY);
        assert_eq!(Span::valid(5, 1, 1, 1, 4), Span::EMPTY);
    }

    #[test]
    fn tiles_of_full_classes_skip_every_padding_tap() {
        // 4 x 4, 3x3, padding 1, 8 images: every class fills whole tiles of 8, and the tiles
        // run 100 of the 144 taps per image (4 corners x 4, 8 edge pixels x 6, 4 inner x 9).
        let g = geometry(4, 3, 1, 1);
        let tiles = PixelTiles::<8>::new(&g, 6, 36, 8);
        assert_eq!(tiles.offsets.len(), 16);
        assert_eq!(products(&tiles), 8 * 100);
        // Every pixel of every image appears once.
        let mut rows: Vec<usize> = tiles.rows.iter().flatten().copied().collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..8 * 16).collect::<Vec<_>>());
    }

    #[test]
    fn a_tile_straddling_classes_runs_every_tap_its_pixels_need() {
        // One image of 4 x 4: the 9 classes cannot fill tiles of 8, so tiles mix them and run
        // the rectangle holding all their pixels' valid taps.
        let g = geometry(4, 3, 1, 1);
        let tiles = PixelTiles::<8>::new(&g, 6, 36, 1);
        assert_eq!(tiles.offsets.len(), 2);
        for (tile, range) in tiles.tap_ranges.iter().enumerate() {
            let taps: Vec<usize> = tiles.taps[range.clone()].iter().map(|t| t.1).collect();
            for &row in &tiles.rows[tile] {
                let rows = Span::valid(row / 4, 1, 1, 3, 4);
                let cols = Span::valid(row % 4, 1, 1, 3, 4);
                for a in rows.start..rows.end {
                    for b in cols.start..cols.end {
                        assert!(taps.contains(&(a * 3 + b)), "tile {tile}, pixel {row}");
                    }
                }
            }
        }
    }

    #[test]
    fn each_tap_lists_exactly_the_pixels_that_read_the_image_through_it() {
        // 4 x 4, 3x3, padding 1, 2 images: the centre tap sees all 16 pixels of each image, a
        // corner tap the 9 whose window keeps it inside; 100 per image in all.
        let g = geometry(4, 3, 1, 1);
        let lists = TapPixels::new(&g, 6, 36, 1, 2);
        let counts: Vec<usize> = lists.taps.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(counts, [18, 24, 18, 24, 32, 24, 18, 24, 18]);
        // Tap (0, 0) reads row i - 1, column j - 1: pixels with i, j >= 1.
        let (tap, pixels) = &lists.taps[0];
        assert_eq!(*tap, 0);
        assert!(
            pixels
                .iter()
                .all(|&(row, _)| row % 16 / 4 >= 1 && row % 4 >= 1)
        );
        // Stride 2 from 8 x 8 to 4 x 4: only kernel row 0 and column 0 meet padding.
        let g = geometry(8, 3, 2, 1);
        let lists = TapPixels::new(&g, 10, 100, 1, 1);
        let counts: Vec<usize> = lists.taps.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(counts, [9, 12, 12, 12, 16, 16, 12, 16, 16]);
    }

    #[test]
    fn transposed_tiles_run_exactly_the_products_of_the_forward_pass() {
        // Stride 2, 3x3, padding 1, 8 x 8 onto 4 x 4: along each axis 11 (input, kernel) pairs
        // meet (rows 1, 3, 5 take two kernel rows, the others one), so 121 products per image
        // and channel pair, as in the forward pass; with 8 images every class fills its tiles.
        let g = geometry(8, 3, 2, 1);
        let tiles = PixelTiles::<8>::transposed(&g, 5, 25, 8, [1, 1]);
        assert_eq!(products(&tiles), 8 * 121);
        let mut rows: Vec<usize> = tiles.rows.iter().flatten().copied().collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..8 * 64).collect::<Vec<_>>());
        // Input row 7 (parity 0) reaches output row 3 through kernel row 2 only (k = 1).
        assert_eq!(
            Span::reaching(7, 2, 1, 3, 4),
            (0, 4, Span { start: 1, end: 2 })
        );
        // A 1x1 kernel with stride 3: only inputs of parity 0 receive a gradient.
        assert_eq!(Span::reaching(4, 3, 0, 1, 3).2, Span::EMPTY);
        assert_eq!(
            Span::reaching(3, 3, 0, 1, 3),
            (0, 1, Span { start: 0, end: 1 })
        );
    }

    #[test]
    fn a_pixel_of_padding_only_runs_no_taps() {
        // 1x1 kernel, padding 1, on a 2 x 2 input: the 12 border outputs of the 4 x 4 map read
        // only padding (one class, three tiles without taps), the 4 inner ones one tap each.
        let g = geometry(2, 1, 1, 1);
        let tiles = PixelTiles::<4>::new(&g, 4, 16, 1);
        assert_eq!(tiles.offsets.len(), 4);
        assert_eq!(products(&tiles), 4);
    }
}
