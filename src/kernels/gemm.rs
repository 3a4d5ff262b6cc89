//! Matrix products on strided f32 views by the `gemm` crate, whose micro-kernels are chosen at
//! run time (AVX-512, AVX2 + FMA, SSE, NEON, scalar): single-threaded for the convolution and
//! attention kernels, which parallelise over images or sequences themselves, and on all threads
//! for the linear layers ([`product_vec`], [`product_plus_row_vec`]).

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

    /// The view without its first `row` rows.
    fn skip_rows(self, row: usize) -> Self {
        Self {
            data: &self.data[row * self.row_stride..],
            ..self
        }
    }

    /// The view without its first `col` columns.
    fn skip_cols(self, col: usize) -> Self {
        Self {
            data: &self.data[col * self.col_stride..],
            ..self
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
    product(
        dst.as_mut_ptr(),
        dst.len(),
        (dst_rs, dst_cs),
        [m, n, k],
        lhs,
        rhs,
        accumulate,
        gemm::Parallelism::None,
    );
}

/// [`matmul_strided`] into values not yet written (`dst = lhs · rhs`, never `+=`): when not
/// accumulating, `gemm` writes the destination without reading it (see the safety note in
/// [`product_plus_row_vec`]), so the caller need not zero it first. After the call the
/// `m x n` view's values are initialised; the rest of `dst` is untouched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided_uninit(
    dst: &mut [std::mem::MaybeUninit<f32>],
    dst_rs: usize,
    dst_cs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
) {
    product(
        dst.as_mut_ptr().cast::<f32>(),
        dst.len(),
        (dst_rs, dst_cs),
        [m, n, k],
        lhs,
        rhs,
        false,
        gemm::Parallelism::None,
    );
}

/// Products of at least this many multiply-adds run on all of rayon's threads (burn flex's
/// threshold for its own `matmul`).
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// `lhs (m x k) · rhs (k x n)` as a new row-major vector, on all of rayon's threads when the
/// product is large: the output is written once, never zeroed first.
pub(crate) fn product_vec([m, n, k]: [usize; 3], lhs: Mat, rhs: Mat) -> Vec<f32> {
    product_plus_row_vec([m, n, k], lhs, rhs, None)
}

/// [`product_vec`] with `row` (`n` values) added to every row of the product when given: each
/// thread adds it to its own block of the output right after computing it.
pub(crate) fn product_plus_row_vec(
    [m, n, k]: [usize; 3],
    lhs: Mat,
    rhs: Mat,
    row: Option<&[f32]>,
) -> Vec<f32> {
    if let Some(row) = row {
        assert_eq!(
            row.len(),
            n,
            "matrix product: a row to add of the wrong length"
        );
    }
    let len = m * n;
    let mut dst = Vec::with_capacity(len);
    parallel_product(
        dst.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
        len,
        [m, n, k],
        lhs,
        rhs,
        row,
    );
    // SAFETY: `gemm` wrote every one of the `m · n` values: it does not read the destination
    // when not accumulating (true of every micro-kernel this crate builds; the Apple AMX one,
    // behind `gemm`'s `experimental-apple-amx` feature, which nothing here enables, copies
    // partial tiles of the destination first).
    unsafe { dst.set_len(len) };
    dst
}

/// A row-major destination pointer shared by the tasks of [`parallel_product`], each writing
/// its own rows or columns.
#[derive(Clone, Copy)]
struct SharedDestination(*mut f32);

impl SharedDestination {
    fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the tasks write disjoint parts of the destination (see `parallel_product`).
unsafe impl Send for SharedDestination {}
// SAFETY: as above.
unsafe impl Sync for SharedDestination {}

/// A row-major `m x n` product written into `dst` (`dst_len` values, uninitialised), split into
/// one block of rows (or of columns, when the output is wider than tall) per rayon thread, each
/// a single-threaded `gemm` call followed by the addition of `row` to the block's rows when
/// given, while the block is still in the thread's caches: one fork and one join per product.
/// On 2 cores of a Zen 3 this made the ViT step 1-5% faster than `gemm`'s own split
/// (BENCHMARKS.md, session 41).
fn parallel_product(
    dst: *mut f32,
    dst_len: usize,
    [m, n, k]: [usize; 3],
    lhs: Mat,
    rhs: Mat,
    row: Option<&[f32]>,
) {
    use rayon::prelude::*;
    /// Rows or columns per block are rounded up to a multiple of this (whole vectors of 8 or
    /// 16 lanes).
    const ALIGN: usize = 16;
    assert!(
        dst_len >= m * n,
        "matrix product: {dst_len} values for a {m} x {n} destination"
    );
    let threads = rayon::current_num_threads();
    let split_rows = m >= n;
    let len = if split_rows { m } else { n };
    let per_block = len.div_ceil(threads).next_multiple_of(ALIGN);
    if threads == 1 || m.saturating_mul(n).saturating_mul(k) < PARALLEL_PRODUCT || per_block >= len
    {
        return block_product(dst, dst_len, n, [m, n, k], lhs, rhs, row);
    }
    let shared = SharedDestination(dst);
    (0..len.div_ceil(per_block))
        .into_par_iter()
        .for_each(|block| {
            let start = block * per_block;
            let size = per_block.min(len - start);
            let offset = if split_rows { start * n } else { start };
            // SAFETY: `offset` lies within the destination (`start < len`); the blocks' rows (or
            // columns) are disjoint, so no two tasks write the same value.
            let dst = unsafe { shared.get().add(offset) };
            let dst_len = dst_len - offset;
            if split_rows {
                let lhs = lhs.skip_rows(start);
                block_product(dst, dst_len, n, [size, n, k], lhs, rhs, row);
            } else {
                let (rhs, row) = (rhs.skip_cols(start), row.map(|r| &r[start..]));
                block_product(dst, dst_len, n, [m, size, k], lhs, rhs, row);
            }
        });
}

/// One thread's block of [`parallel_product`]: `m x n` values at row stride `dst_rs`, written
/// by `gemm`, then the first `n` values of `row` added to each of its rows.
fn block_product(
    dst: *mut f32,
    dst_len: usize,
    dst_rs: usize,
    [m, n, k]: [usize; 3],
    lhs: Mat,
    rhs: Mat,
    row: Option<&[f32]>,
) {
    let none = gemm::Parallelism::None;
    product(dst, dst_len, (dst_rs, 1), [m, n, k], lhs, rhs, false, none);
    let Some(row) = row else { return };
    for i in 0..m {
        // SAFETY: `product` checked that the block lies within the `dst_len` values and wrote
        // all of it; no other thread writes these rows' columns (see `parallel_product`).
        let values = unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n) };
        for (value, &add) in values.iter_mut().zip(row) {
            *value += add;
        }
    }
}

/// The `gemm` call behind every product: `dst` points at `dst_len` values, element `(i, j)` at
/// `i · dst_rs + j · dst_cs`, which must be initialised when `accumulate` (else they are only
/// written).
#[allow(clippy::too_many_arguments)]
fn product(
    dst: *mut f32,
    dst_len: usize,
    (dst_rs, dst_cs): (usize, usize),
    [m, n, k]: [usize; 3],
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = (m - 1) * dst_rs + (n - 1) * dst_cs;
    assert!(
        last < dst_len,
        "matrix product: destination view out of bounds"
    );
    if k == 0 {
        // An empty sum: nothing to add, or zeros to write.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: `(i, j)` lies within the view checked above.
                    unsafe { dst.add(i * dst_rs + j * dst_cs).write(0.0) };
                }
            }
        }
        return;
    }
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    // SAFETY: the bounds of all three views were checked above; every caller owns `dst`
    // exclusively (a `&mut` borrow or a vector's spare capacity), so it does not alias `lhs` or
    // `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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
            parallelism,
        );
    }
}
