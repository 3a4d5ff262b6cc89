//! Loops over vectors of [`LANES`] values written as arrays, compiled once per instruction set:
//! [`run_widest`] runs a [`VectorPass`] with the widest instructions this CPU has, where the
//! compiler turns each array operation into one or two vector instructions.

#[cfg(target_arch = "x86_64")]
use super::isa::{has_avx2_fma, has_avx512};

/// Values per vector: 16 floats, one AVX-512 register or two AVX2 registers.
pub(crate) const LANES: usize = 16;

/// One value in each of [`LANES`] channels or tiles.
pub(crate) type Lanes = [f32; LANES];

/// A loop over [`Lanes`], compiled by [`run_widest`] for the widest instructions the CPU has.
/// Implementations mark `run` `#[inline(always)]`: only code inlined into `run_widest`'s
/// target-feature functions gets their instructions (else `mul_add` becomes a call to `fmaf`).
pub(crate) trait VectorPass {
    /// What the pass returns.
    type Output;

    fn run(self) -> Self::Output;
}

/// Runs `pass` compiled for AVX-512, else AVX2 + FMA, else the build's baseline.
pub(crate) fn run_widest<P: VectorPass>(pass: P) -> P::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (has_avx512 checked).
            return unsafe { run_avx512(pass) };
        }
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (has_avx2_fma checked).
            return unsafe { run_avx2(pass) };
        }
    }
    pass.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn run_avx512<P: VectorPass>(pass: P) -> P::Output {
    pass.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<P: VectorPass>(pass: P) -> P::Output {
    pass.run()
}

#[inline(always)]
pub(crate) fn load(values: &[f32], at: usize) -> Lanes {
    values[at..][..LANES]
        .try_into()
        .expect("a vector of values")
}

#[inline(always)]
pub(crate) fn store(values: &mut [f32], at: usize, lanes: &Lanes) {
    values[at..][..LANES].copy_from_slice(lanes);
}

/// `[f(0), f(1), ..., f(N - 1)]` (`N > 0`), built by a plain loop. In the Winograd
/// transforms `std::array::from_fn` over arrays of [`Lanes`] compiled to out-of-line
/// `try_from_fn` calls and `memcpy`s of whole tiles (about 15% of a Winograd weight gradient,
/// BENCHMARKS.md); this loop unrolls into vector registers.
#[inline(always)]
pub(crate) fn array<T: Copy, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    const { assert!(N > 0, "an array of at least one value") };
    let mut values = [f(0); N];
    for (i, value) in values.iter_mut().enumerate().skip(1) {
        *value = f(i);
    }
    values
}

/// `[f(a[0]), ..., f(a[N - 1])]` by a plain loop over the `N` values: with a short `f` the
/// compiler turns it into `N / lanes` adjacent vector instructions, so a computation written as
/// a sequence of `each` stages over a block of several vectors runs the vectors' dependency
/// chains side by side (where one value per loop iteration leaves each chain waiting on its
/// own latencies).
#[inline(always)]
pub(crate) fn each<const N: usize>(a: [f32; N], f: impl Fn(f32) -> f32) -> [f32; N] {
    let mut out = [0.0; N];
    for (o, &a) in out.iter_mut().zip(&a) {
        *o = f(a);
    }
    out
}

/// `[f(a[0], b[0]), ..., f(a[N - 1], b[N - 1])]`, as [`each`].
#[inline(always)]
pub(crate) fn each2<const N: usize>(
    a: [f32; N],
    b: [f32; N],
    f: impl Fn(f32, f32) -> f32,
) -> [f32; N] {
    let mut out = [0.0; N];
    for ((o, &a), &b) in out.iter_mut().zip(&a).zip(&b) {
        *o = f(a, b);
    }
    out
}

#[inline(always)]
pub(crate) fn add(a: Lanes, b: Lanes) -> Lanes {
    array(|l| a[l] + b[l])
}

#[inline(always)]
pub(crate) fn sub(a: Lanes, b: Lanes) -> Lanes {
    array(|l| a[l] - b[l])
}

#[inline(always)]
pub(crate) fn neg(a: Lanes) -> Lanes {
    array(|l| -a[l])
}

#[inline(always)]
pub(crate) fn scale(a: Lanes, factor: f32) -> Lanes {
    array(|l| factor * a[l])
}

/// `Σ a`, accumulated in [`LANES`] partial sums so that it runs on vectors.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut partial: Lanes = [0.0; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &v) in partial.iter_mut().zip(chunk) {
            *p += v;
        }
    }
    for (p, &v) in partial.iter_mut().zip(chunks.remainder()) {
        *p += v;
    }
    partial.iter().sum()
}

/// `(Σ (a - shift), Σ (a - shift)²)`, each accumulated as [`sum`], in one pass.
#[inline(always)]
pub(crate) fn centred_sums(a: &[f32], shift: f32) -> (f32, f32) {
    let (mut sums, mut squares): (Lanes, Lanes) = ([0.0; LANES], [0.0; LANES]);
    let mut add = |chunk: &[f32]| {
        for ((s, q), &v) in sums.iter_mut().zip(squares.iter_mut()).zip(chunk) {
            let c = v - shift;
            *s += c;
            *q = c.mul_add(c, *q);
        }
    };
    let mut chunks = a.chunks_exact(LANES);
    for chunk in &mut chunks {
        add(chunk);
    }
    add(chunks.remainder());
    (sums.iter().sum(), squares.iter().sum())
}

/// `Σ a⊙b`, as [`sum`].
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial: Lanes = [0.0; LANES];
    let (mut a_chunks, mut b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (a, b) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((p, &a), &b) in partial.iter_mut().zip(a).zip(b) {
            *p = a.mul_add(b, *p);
        }
    }
    for ((p, &a), &b) in partial
        .iter_mut()
        .zip(a_chunks.remainder())
        .zip(b_chunks.remainder())
    {
        *p = a.mul_add(b, *p);
    }
    partial.iter().sum()
}
