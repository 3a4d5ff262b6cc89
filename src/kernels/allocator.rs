//! Keeping freed tensor memory in the process, so a training step does not pay the kernel to
//! map and zero fresh pages for every activation.
//!
//! Every training step allocates and frees the same large buffers (activations, gradients,
//! unfolded patches). With glibc's defaults, buffers of 128 KiB and more are served by `mmap`
//! and unmapped when freed (the threshold adapts upwards only slowly), and free memory at the
//! top of the heap is returned with `brk`. The next step then touches fresh pages: each one is
//! a page fault plus zeroing in the kernel. On the CIFAR-10 benchmark's step (ResNet-18 width
//! 16, batch 256, 2 cores) that was 13% of the CPU time in the kernel; with
//! [`retain_freed_memory`] the step ran 17-23% faster (`BENCHMARKS.md`).
//!
//! glibc serves blocks above its largest mmap threshold (32 MiB) by `mmap` whatever the
//! threshold is set to, so those are also kept on the heap (`M_MMAP_MAX = 0`): the weight
//! gradient of one 8192 x 8192 layer of the papers' heads is 256 MiB, and mapping it afresh
//! cost 65,536 page faults per product (its product took 3x as long as into reused memory on a
//! 2-core Zen 3). What is kept is what earlier steps used; the heap can hold more than the
//! step's peak when a freed block is not the size of the next one (VICReg with the papers'
//! heads at width 64, batch 128: 3.82 instead of 3.39 GB peak, for a step 1.2-1.6x as fast;
//! `BENCHMARKS.md`). glibc keeps large blocks off `mmap` on the main thread's heap only,
//! where the training step allocates.
//!
//! [`crate::train::pretrain_with`] calls it for you on the CPU device. Call it yourself at the
//! start of a program that runs its own training loop with [`crate::step::train_step`].

use std::sync::OnceLock;

/// glibc's largest allowed mmap threshold on 64-bit targets (`HEAP_MAX_SIZE / 2`): blocks below
/// it come from the heap and are reused; larger ones are mapped unless `M_MMAP_MAX` is 0.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// glibc's environment variables for the settings [`retain_freed_memory`] makes: when the user
/// set any of them, their choice stands.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const USER_SETTINGS: [&str; 4] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Whether the user chose their own allocator settings ([`USER_SETTINGS`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn user_chose_settings() -> bool {
    USER_SETTINGS
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// Whether the allocator was tuned, decided once per process.
static RETAINED: OnceLock<bool> = OnceLock::new();

/// Tells the C allocator to keep freed memory for reuse instead of returning it to the kernel
/// (glibc: `mallopt(M_MMAP_THRESHOLD, 32 MiB)`, `mallopt(M_MMAP_MAX, 0)`: the main thread's
/// heap serves blocks of every size, `mallopt(M_TRIM_THRESHOLD, 1 GiB)`,
/// `mallopt(M_TOP_PAD, 64 MiB)`). Once per process; later calls return the first answer.
///
/// Returns `true` when the settings were applied; `false` on other C libraries and targets
/// (where it does nothing), or when the user chose their own settings through glibc's
/// environment variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_MMAP_MAX_`,
/// `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`), which are left as they are. Programs that
/// install another global allocator (e.g. mimalloc) are not affected either way.
pub fn retain_freed_memory() -> bool {
    *RETAINED.get_or_init(apply)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    if user_chose_settings() {
        return false;
    }
    // SAFETY: `mallopt` only changes allocator parameters; glibc serialises it with the
    // allocator's own lock and accepts these values on every 64-bit target.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
            && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_is_idempotent_and_memory_still_works() {
        let first = retain_freed_memory();
        assert_eq!(retain_freed_memory(), first);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if !user_chose_settings() {
            assert!(first, "glibc accepted the settings");
        }
        // Large blocks on both sides of the threshold are still allocated, written and freed.
        for len in [1 << 20, (32 << 20) / 4 - 1, (40 << 20) / 4] {
            let mut buffer = vec![0.0f32; len];
            buffer[len - 1] = 1.0;
            assert_eq!(buffer.iter().sum::<f32>(), 1.0);
        }
    }

    /// Blocks above glibc's largest mmap threshold come from the heap too once the settings
    /// are applied. glibc keeps that promise on the main thread's heap only (another thread's
    /// heap is at most 64 MiB and maps what does not fit), which is where training allocates;
    /// test threads are not the main thread, so the check runs in a child process whose
    /// threads all share the main heap (`MALLOC_ARENA_MAX=1`), in [`large_block_probe`].
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn blocks_above_the_mmap_threshold_come_from_the_main_heap() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kernels::allocator::tests::large_block_probe",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("SELFSUP_ALLOCATOR_PROBE", "1")
            .env("MALLOC_ARENA_MAX", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("probe: 64 MiB block from the heap"),
            "probe failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The child's half of the test above (does nothing unless `SELFSUP_ALLOCATOR_PROBE` is
    /// set): the bytes in mapped blocks do not grow while a 64 MiB block is alive.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_block_probe() {
        if std::env::var_os("SELFSUP_ALLOCATOR_PROBE").is_none() || !retain_freed_memory() {
            return;
        }
        // SAFETY: `mallinfo2` only reads the allocator's statistics.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        let mut block = vec![1.0f32; (64 << 20) / 4];
        block[12_345] = 2.0;
        let during = mapped();
        assert_eq!(block.iter().sum::<f32>(), block.len() as f32 + 1.0);
        assert!(
            during <= before,
            "a 64 MiB block was mapped: {before} -> {during} bytes in mapped blocks"
        );
        println!("probe: 64 MiB block from the heap");
    }
}
