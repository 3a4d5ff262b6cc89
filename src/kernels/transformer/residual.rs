//! The residual connection `x + y` of a transformer block on all cores.
//!
//! burn's flex backend adds tensors in place on the calling thread below 4 Mi values
//! (`burn_flex::simd`'s parallel threshold), and a ViT-Tiny block's `[B·N, 192]` activations
//! are under a million: twice per block the other cores waited (0.6-0.8% of an I-JEPA or
//! LeJEPA step's samples on the main thread, BENCHMARKS.md). On 2 cores that is within the
//! step's noise; on 16 the serial adds would weigh eight times as much against the products.

/// Values per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 15;

/// `x + y` element by element, in parallel; the same values as a sequential sum (each
/// element is one rounding of its two operands).
///
/// # Panics
/// If `x` and `y` differ in length.
pub fn residual_add_forward(x: &[f32], y: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), y.len(), "residual add: the two operands");
    // SAFETY: each task writes every value of its chunk.
    unsafe {
        crate::kernels::flex_f32::par_filled(x.len(), CHUNK, |index, out| {
            let at = index * CHUNK;
            let (x, y) = (&x[at..][..out.len()], &y[at..][..out.len()]);
            for ((out, &x), &y) in out.iter_mut().zip(x).zip(y) {
                out.write(x + y);
            }
        })
    }
}
