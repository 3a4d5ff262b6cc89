//! One image at a time, channel-last and zero-padded, so that a vector load reads one value of
//! [`LANES`] neighbouring channels: the layout of the Winograd transforms, which run on
//! [`LANES`] channels at once.
//!
//! The images of a layer are `[C, H, W]`: a plane per channel. A transform reads a 4 x 4 (or
//! 6 x 6) tile of every channel and writes 16 (or 36) values per tile; run one tile at a time,
//! it is scalar code that scatters into 16 rows (60% of a Winograd convolution's time,
//! BENCHMARKS.md). With the
//! channels last, the same arithmetic runs on vectors of channels, and each transformed value
//! is a vector store.

use crate::kernels::lanes::{LANES, VectorPass, run_widest};

/// Where an image `[channels, height, width]` goes in a channel-last buffer
/// `[rows, cols, stride]`: pixel `(0, 0)` at `(top, left)`, channels `channels..stride` and
/// every pixel outside the image zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChannelLastGrid {
    pub(super) channels: usize,
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) top: usize,
    pub(super) left: usize,
}

impl ChannelLastGrid {
    /// Values per pixel: the channels rounded up to whole vectors of [`LANES`].
    pub(super) fn stride(&self) -> usize {
        self.channels.next_multiple_of(LANES)
    }

    fn len(&self) -> usize {
        self.rows * self.cols * self.stride()
    }
}

/// A thread's buffer for [`ChannelLastGrid`]s. The zeros depend only on the grid and every
/// image overwrites the same cells, so the buffer is zeroed only when the grid changes.
#[derive(Default)]
pub(super) struct ChannelLastImage {
    values: Vec<f32>,
    zeroed_for: Option<ChannelLastGrid>,
}

impl ChannelLastImage {
    /// `image [channels, height, width]` placed on `grid`.
    pub(super) fn place(&mut self, grid: ChannelLastGrid, image: &[f32]) -> &[f32] {
        assert!(
            grid.top + grid.height <= grid.rows && grid.left + grid.width <= grid.cols,
            "channel-last image: {} x {} at ({}, {}) outside {} x {}",
            grid.height,
            grid.width,
            grid.top,
            grid.left,
            grid.rows,
            grid.cols
        );
        assert_eq!(
            image.len(),
            grid.channels * grid.height * grid.width,
            "channel-last image: source length"
        );
        if self.zeroed_for != Some(grid) {
            self.values.clear();
            self.values.resize(grid.len(), 0.0);
            self.zeroed_for = Some(grid);
        }
        run_widest(Transpose {
            grid,
            image,
            values: &mut self.values,
        });
        &self.values
    }
}

/// The copy into the channel-last grid, in blocks of [`LANES`] channels by one image row: the
/// loads of one pixel's channels are a plane apart, and the compiler turns them into gathers
/// where the instruction set has them.
struct Transpose<'a> {
    grid: ChannelLastGrid,
    image: &'a [f32],
    values: &'a mut [f32],
}

impl VectorPass for Transpose<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let grid = self.grid;
        let (height, width, stride) = (grid.height, grid.width, grid.stride());
        let plane = height * width;
        for block in (0..grid.channels).step_by(LANES) {
            let lanes = LANES.min(grid.channels - block);
            for r in 0..height {
                let row_start = ((grid.top + r) * grid.cols + grid.left) * stride + block;
                for col in 0..width {
                    let pixel = &mut self.values[row_start + col * stride..][..lanes];
                    let at = block * plane + r * width + col;
                    for (lane, value) in pixel.iter_mut().enumerate() {
                        *value = self.image[at + lane * plane];
                    }
                }
            }
        }
    }
}
