//! The shape of one 2-D convolution, as the fast kernels see it.

/// Everything the kernels need to know about a 2-D convolution with `groups = 1` and
/// `dilation = 1`: input `[batch, in_channels, in_height, in_width]` (NCHW, contiguous), weight
/// `[out_channels, in_channels, kernel_height, kernel_width]`, symmetric zero padding.
///
/// Output size per axis: `out = (in + 2 * padding - kernel) / stride + 1` (PyTorch's formula).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_height: usize,
    /// Input width.
    pub in_width: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_height: usize,
    /// Kernel width.
    pub kernel_width: usize,
    /// Stride `[height, width]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[height, width]`.
    pub padding: [usize; 2],
}

impl ConvGeometry {
    /// Output height.
    pub fn out_height(&self) -> usize {
        (self.in_height + 2 * self.padding[0] - self.kernel_height) / self.stride[0] + 1
    }

    /// Output width.
    pub fn out_width(&self) -> usize {
        (self.in_width + 2 * self.padding[1] - self.kernel_width) / self.stride[1] + 1
    }

    /// Whether the kernel covers at least one input pixel at every output position, i.e. the
    /// output has a positive size.
    pub fn is_valid(&self) -> bool {
        self.batch > 0
            && self.in_channels > 0
            && self.out_channels > 0
            && self.kernel_height > 0
            && self.kernel_width > 0
            && self.stride[0] > 0
            && self.stride[1] > 0
            && self.in_height + 2 * self.padding[0] >= self.kernel_height
            && self.in_width + 2 * self.padding[1] >= self.kernel_width
    }

    /// Output pixels per image and channel.
    pub fn out_pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Input pixels per image and channel.
    pub fn in_pixels(&self) -> usize {
        self.in_height * self.in_width
    }

    /// Rows of the unfolded input (im2col): `in_channels * kernel_height * kernel_width`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_height * self.kernel_width
    }

    /// A 1x1 convolution with stride 1 and no padding: the input is its own im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_height == 1
            && self.kernel_width == 1
            && self.stride == [1, 1]
            && self.padding == [0, 0]
    }

    /// Multiply-adds of the forward pass, times two: the FLOP count used in benchmarks.
    pub fn forward_flops(&self) -> f64 {
        2.0 * self.batch as f64
            * self.out_channels as f64
            * self.out_pixels() as f64
            * self.patch_len() as f64
    }

    /// Elements of the input tensor.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_pixels()
    }

    /// Elements of the weight tensor.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    /// Elements of the output tensor.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_pixels()
    }
}
