//! Which algorithm computes a convolution: im2col + gemm (with two group sizes), Winograd
//! F(2x2, 3x3) or F(4x4, 3x3), or the direct kernels where they apply. None wins everywhere
//! (Winograd does 2.25x or 4x fewer multiplications but moves more memory, so it pays on deep
//! layers and loses on narrow ones; the direct kernels save the unfolding, which matters most
//! on narrow layers; by amounts that differ between CPUs), so the choice is made by
//! measurement on the machine: the first time a shape is seen, each candidate runs at least
//! three times (up to a hundred on small layers, for about 0.2 s) on the call's own data and
//! the fastest (by its best time) is kept.
//!
//! The choice is deterministic for a shape once made: remembered for the process, and in a
//! cache file (`conv-algorithms-v6.txt` under `$SELFSUP_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/selfsup`, else `$HOME/.cache/selfsup`), keyed by the CPU model, the thread
//! count and the shape, so a rerun or a resumed run on the same machine takes the same path and
//! gets bit-identical results. `SELFSUP_CONV_ALGORITHM=im2col|im2col-l2|winograd|winograd-4x4|direct|direct-channels` or
//! [`set_conv_algorithm`] fixes the algorithm instead (benchmarks, comparisons).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::geometry::ConvGeometry;

/// How a convolution's forward product is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// Unfolded patches times the weight matrix (any shape), images grouped to about 1,024
    /// output pixels per product (but no fewer groups than threads).
    Im2col,
    /// As [`Self::Im2col`], with fewer images per product: as many as keep one group's patch
    /// matrix within half of a core's L2 cache. Deep layers have long patch rows
    /// (`C_in·kh·kw`), and a patch matrix that falls out of the cache between the unfolding
    /// and the product costs more than a larger product gains; by how much depends on the
    /// CPU's caches, so it is measured (a candidate where its groups are smaller).
    Im2colL2,
    /// Winograd F(2x2, 3x3) for forward passes and F(3x3, 2x2) for weight gradients (3x3
    /// kernels with stride 1).
    Winograd,
    /// Winograd F(4x4, 3x3) for forward passes (3x3 kernels with stride 1; so also their input
    /// gradients): 4x fewer multiplies than the direct convolution, against F(2x2, 3x3)'s
    /// 2.25x, for larger transforms. Weight gradients run as [`Self::Im2col`] where it is
    /// fixed.
    Winograd4x4,
    /// The direct kernels: [`direct_forward`](super::direct_forward) for forward passes (stride 1, any kernel but an
    /// unpadded 1x1; so also stride-1 input gradients) and [`fn@super::direct_weight_grad`] for
    /// weight gradients (3x3, stride 1).
    Direct,
    /// [`direct_channels_forward`](super::direct_channels_forward): the direct forward kernel
    /// with output channels instead of pixels in the vector lanes (any stride and kernel but an
    /// unpadded stride-1 1x1; so also stride-1 input gradients), for deep layers on small maps
    /// and strided layers; [`channels_weight_grad`](super::channels_weight_grad), its
    /// counterpart, for weight gradients (the same shapes, within 4 MiB of accumulators per
    /// thread), and [`direct_channels_input_grad`](super::direct_channels_input_grad) for the
    /// input gradients of strided layers. All three skip the products with padding.
    DirectChannels,
}

impl ConvAlgorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Im2col => "im2col",
            Self::Im2colL2 => "im2col-l2",
            Self::Winograd => "winograd",
            Self::Winograd4x4 => "winograd-4x4",
            Self::Direct => "direct",
            Self::DirectChannels => "direct-channels",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Every algorithm, in the order of [`Self::code`].
    const ALL: [Self; 6] = [
        Self::Im2col,
        Self::Winograd,
        Self::Direct,
        Self::Im2colL2,
        Self::DirectChannels,
        Self::Winograd4x4,
    ];

    /// The algorithm's code in [`FORCED`]: its place in [`Self::ALL`] plus one.
    fn code(self) -> u8 {
        let index = Self::ALL.iter().position(|&a| a == self);
        1 + index.expect("every algorithm is in ALL") as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).wrapping_sub(1)).copied()
    }
}

/// [`FORCED`]: choose by measurement.
const MEASURED: u8 = 0;
/// [`FORCED`]: not yet read from the environment.
const UNSET: u8 = 255;

/// [`MEASURED`], [`UNSET`] or the [`ConvAlgorithm::code`] of a fixed algorithm.
static FORCED: AtomicU8 = AtomicU8::new(UNSET);

/// Fixes the algorithm of every convolution it applies to (`Some`), or returns to choosing by
/// measurement (`None`, the default). Winograd and the direct kernel still only run where they
/// apply; elsewhere im2col does.
pub fn set_conv_algorithm(algorithm: Option<ConvAlgorithm>) {
    FORCED.store(
        algorithm.map_or(MEASURED, ConvAlgorithm::code),
        Ordering::Relaxed,
    );
}

/// The fixed algorithm, if any: [`set_conv_algorithm`], else `SELFSUP_CONV_ALGORITHM`.
fn forced() -> Option<ConvAlgorithm> {
    let mut value = FORCED.load(Ordering::Relaxed);
    if value == UNSET {
        value = std::env::var("SELFSUP_CONV_ALGORITHM")
            .ok()
            .and_then(|name| ConvAlgorithm::parse(&name))
            .map_or(MEASURED, ConvAlgorithm::code);
        // A concurrent set_conv_algorithm wins over the environment.
        let _ = FORCED.compare_exchange(UNSET, value, Ordering::Relaxed, Ordering::Relaxed);
        value = FORCED.load(Ordering::Relaxed);
    }
    ConvAlgorithm::from_code(value)
}

/// Which product of a convolution an algorithm is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPass {
    /// The forward pass (and the input gradient of a stride-1 layer, a forward convolution).
    Forward,
    /// The input gradient of a layer whose input gradient is not a forward convolution
    /// (strided layers).
    InputGrad,
    /// The weight gradient.
    WeightGrad,
}

/// The cache key of `g`'s `pass` on this machine and thread count.
fn key(g: &ConvGeometry, pass: ConvPass) -> String {
    format!(
        "{} | threads {} | {pass:?} n{} c{} {}x{} o{} k{}x{} s{}x{} p{}x{}",
        cpu_model(),
        rayon::current_num_threads(),
        g.batch,
        g.in_channels,
        g.in_height,
        g.in_width,
        g.out_channels,
        g.kernel_height,
        g.kernel_width,
        g.stride[0],
        g.stride[1],
        g.padding[0],
        g.padding[1]
    )
}

/// The CPU, as precisely as `/proc/cpuinfo` names it: model name, family, model and whether it
/// has AVX-512 (virtual machines may call different generations just "AMD EPYC").
fn cpu_model() -> &'static str {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL.get_or_init(|| {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return std::env::consts::ARCH.to_string();
        };
        let field = |name: &str| {
            info.lines()
                .find(|l| l.split(':').next().map(str::trim) == Some(name))
                .and_then(|l| l.split(':').nth(1))
                .map_or(String::new(), |v| v.trim().replace('|', "/"))
        };
        let avx512 = field("flags").split_whitespace().any(|f| f == "avx512f");
        format!(
            "{} family {} model {}{}",
            field("model name"),
            field("cpu family"),
            field("model"),
            if avx512 { " avx512" } else { "" }
        )
    })
}

fn cache_file() -> Option<PathBuf> {
    let dir = std::env::var_os("SELFSUP_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("selfsup")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/selfsup")))?;
    // v6: the weight gradient over output channels joined the weight-gradient candidates, the
    // input gradients of strided layers became a measured choice, and
    // the kernel over output channels skips the padding, so v5's choices are stale (v5:
    // Winograd F(4x4, 3x3) and vectorised F(2x2, 3x3) transforms; v4: the direct forward kernel over output
    // channels; v3: the direct weight gradient and im2col with cache-sized groups;
    // v2: the direct forward kernel; v1 had none of them).
    Some(dir.join("conv-algorithms-v6.txt"))
}

/// The choices made so far: the cache file's, then this process's.
fn plans() -> &'static Mutex<HashMap<String, ConvAlgorithm>> {
    static PLANS: OnceLock<Mutex<HashMap<String, ConvAlgorithm>>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let mut plans = HashMap::new();
        if let Some(text) = cache_file().and_then(|f| std::fs::read_to_string(f).ok()) {
            read_plans(&text, &mut plans);
        }
        Mutex::new(plans)
    })
}

/// Adds the `key = algorithm` lines of a cache file's `text` to `plans`; the last line of a key
/// wins.
fn read_plans(text: &str, plans: &mut HashMap<String, ConvAlgorithm>) {
    for line in text.lines() {
        if let Some((key, name)) = line.rsplit_once(" = ")
            && let Some(algorithm) = ConvAlgorithm::parse(name)
        {
            plans.insert(key.to_string(), algorithm);
        }
    }
}

/// The cache file opened for appending and locked against other processes (best effort: `None`
/// when there is no usable cache directory), so that processes started together (the ranks of
/// a job, a run and its resumption) measure a shape once and agree on it.
fn lock_cache_file() -> Option<std::fs::File> {
    let path = cache_file()?;
    std::fs::create_dir_all(path.parent()?).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

/// The choice another process wrote for `key` since this one read the cache file.
fn written_by_another_process(file: &mut std::fs::File, key: &str) -> Option<ConvAlgorithm> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let mut plans = plans().lock().unwrap_or_else(|e| e.into_inner());
    read_plans(&text, &mut plans);
    plans.get(key).copied()
}

/// Remembers `algorithm` for `key`, in the process and (best effort: a cache that cannot be
/// written only costs a measurement next time) in the locked cache `file`.
fn remember(key: String, algorithm: ConvAlgorithm, file: Option<&mut std::fs::File>) {
    if let Some(file) = file {
        let line = format!("{key} = {}\n", algorithm.name());
        drop(file.write_all(line.as_bytes()));
    }
    plans()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, algorithm);
}

/// The algorithm chosen for `g`'s `pass` so far: fixed, or remembered; `None` until measured.
/// A fixed algorithm is returned as fixed even where it does not apply (Winograd on a 5x5
/// layer, the direct kernel for a 5x5 weight gradient); im2col runs there.
pub fn chosen_algorithm(g: &ConvGeometry, pass: ConvPass) -> Option<ConvAlgorithm> {
    forced().or_else(|| {
        plans()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(g, pass))
            .copied()
    })
}

/// Rounds of the measurement: every candidate runs once per round, and each is judged by its
/// best round. At least [`MIN_ROUNDS`]; more, up to [`MAX_ROUNDS`], while the measurement has
/// taken less than [`MEASURING_TIME`], so that small layers (well under a millisecond a call)
/// are judged on calls spread over a fifth of a second, long enough to see past a slow moment
/// of a shared machine, at a cost of a few tenths of a second once per shape. (With at most 10
/// rounds, a layer of 0.2 ms was judged on 10 ms of calls, and a noisy moment picked a
/// candidate 1.5-2x slower than the best: BENCHMARKS.md, session 33.)
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 100;
const MEASURING_TIME: Duration = Duration::from_millis(200);

/// Runs `run(algorithm, output)` with the algorithm chosen for `g`'s `pass` among
/// `candidates` (im2col first, then those that apply to `g`), measuring each first when the
/// shape is new; the result always ends in `y`. A fixed algorithm that is not a candidate runs
/// as im2col.
pub(super) fn run_chosen(
    g: &ConvGeometry,
    pass: ConvPass,
    candidates: &[ConvAlgorithm],
    y: &mut [f32],
    mut run: impl FnMut(ConvAlgorithm, &mut [f32]),
) {
    let applicable = |a: ConvAlgorithm| {
        if candidates.contains(&a) {
            a
        } else {
            ConvAlgorithm::Im2col
        }
    };
    if let Some(algorithm) = chosen_algorithm(g, pass) {
        run(applicable(algorithm), y);
        return;
    }
    // One measurement at a time, in this process and (through the cache file's lock) among
    // processes, so concurrent first calls of a shape agree on its algorithm.
    static MEASURING: Mutex<()> = Mutex::new(());
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let mut file = lock_cache_file();
    let key = key(g, pass);
    let known = match file.as_mut() {
        Some(file) => written_by_another_process(file, &key),
        None => chosen_algorithm(g, pass),
    };
    if let Some(algorithm) = known {
        run(applicable(algorithm), y);
        return;
    }
    // The first candidate writes `y`, the others one scratch buffer; a later winner runs once
    // more into `y`, so the measurement holds one extra output, not one per candidate.
    let mut best = vec![Duration::MAX; candidates.len()];
    let mut scratch = vec![0.0f32; if candidates.len() > 1 { y.len() } else { 0 }];
    let started = Instant::now();
    for round in 0..MAX_ROUNDS {
        if round >= MIN_ROUNDS && started.elapsed() >= MEASURING_TIME {
            break;
        }
        for (index, (&algorithm, best)) in candidates.iter().zip(&mut best).enumerate() {
            let out = if index == 0 {
                &mut *y
            } else {
                &mut scratch[..]
            };
            let start = Instant::now();
            run(algorithm, out);
            *best = (*best).min(start.elapsed());
        }
    }
    // The first of the fastest: ties keep the earlier candidate (im2col).
    let fastest = (0..candidates.len())
        .min_by_key(|&i| best[i])
        .expect("at least one candidate");
    if fastest != 0 {
        run(candidates[fastest], y);
    }
    remember(key, candidates[fastest], file.as_mut());
}
