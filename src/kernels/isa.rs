//! Which instructions the vectorised code runs with (the convolutions' direct kernels and
//! Winograd transforms, the transformer kernels, the augmentations): the widest the CPU has
//! (AVX-512, else AVX2 + FMA, else portable code), or less where [`limit_instruction_set`] says
//! so, so that every variant can be tested and compared on one machine.

use std::sync::atomic::{AtomicU8, Ordering};

/// A family of instructions the vectorised code is compiled for, widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstructionSet {
    /// Portable code, vectorised by the compiler for the build's baseline target.
    Portable = 0,
    /// AVX2 with FMA: 8-lane vectors, 16 registers.
    Avx2 = 1,
    /// AVX-512F (with AVX2 and FMA): 16-lane vectors, 32 registers.
    Avx512 = 2,
}

static LIMIT: AtomicU8 = AtomicU8::new(InstructionSet::Avx512 as u8);

/// Caps the instructions the vectorised kernels and augmentations use (`Some`), or lets them
/// use the widest the CPU has (`None`, the default). A cap above what the CPU has changes
/// nothing. Convolution results differ between instruction sets by rounding only (other vector
/// widths sum in other orders), so a training run should keep one: this is for tests and
/// comparisons. (The transformer kernels and augmentations give the same values on every
/// instruction set.)
pub fn limit_instruction_set(limit: Option<InstructionSet>) {
    let limit = limit.unwrap_or(InstructionSet::Avx512);
    LIMIT.store(limit as u8, Ordering::Relaxed);
}

fn allows(set: InstructionSet) -> bool {
    LIMIT.load(Ordering::Relaxed) >= set as u8
}

/// Whether the AVX-512 variants run: the CPU has AVX-512F, AVX2 and FMA, and no cap forbids it.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        allows(InstructionSet::Avx512)
            && std::arch::is_x86_feature_detected!("avx512f")
            && has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the AVX2 variants run: the CPU has AVX2 and FMA, and no cap forbids it.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    allows(InstructionSet::Avx2)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}
