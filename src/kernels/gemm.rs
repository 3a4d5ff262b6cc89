//! Single-threaded matrix products on strided f32 views by the `gemm` crate, whose
//! micro-kernels are chosen at run time (AVX-512, AVX2 + FMA, SSE, NEON, scalar): the building
//! block of the convolution and attention kernels, which parallelise over images or sequences
//! themselves.

/// A strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(crate) fn transposed(self) -> Self {
        Self {
            data: self.data,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub(crate) fn check(&self, rows: usize, cols: usize, what: &str) {
        let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        assert!(
            last < self.data.len(),
            "matrix product: {what} view out of bounds"
        );
    }
}

/// `dst (m x n, row-major) = lhs (m x k) · rhs (k x n)`, or `dst += ...` when `accumulate`.
pub(crate) fn matmul(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    matmul_strided(dst, n, 1, m, n, k, lhs, rhs, accumulate);
}

/// [`matmul`] with destination element `(i, j)` at `dst[i * dst_rs + j * dst_cs]`. The `gemm`
/// crate's micro-kernels are column-major: `dst_rs = 1` with `lhs.row_stride = 1` avoids a
/// transposing pack.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided(
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let dst_view = Mat {
        data: dst,
        row_stride: dst_rs,
        col_stride: dst_cs,
    };
    dst_view.check(m, n, "destination");
    assert!(k > 0, "matrix product: empty reduction");
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    // SAFETY: the bounds of all three views were checked above; `dst` is exclusively borrowed and
    // does not alias `lhs` or `rhs` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
