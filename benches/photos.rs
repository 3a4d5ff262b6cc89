//! The 224-pixel pipeline from photographs: JPEG decode + BYOL view pair (with blur), per core.
//!
//! ```text
//! cargo bench --bench photos                     # or benches/photos.sh, side by side with PIL
//! ```
//!
//! Sources: every `.jpg` in `SELFSUP_PHOTOS_DIR` (default `../shared/data/photos`: seven real
//! photographs, 500 x 375, JPEG quality 90), read into memory once, so that each round measures
//! decoding and augmentation, not the disk. Each round decodes every photo `SELFSUP_PHOTO_REPEAT`
//! times (default 30) and cuts lightly's BYOL pair at 224 x 224 (crop scale 0.08-1, flip, colour
//! jitter, grayscale, blur p 1.0 / 0.1, solarise 0 / 0.2, ImageNet normalisation) into float
//! buffers. Stages printed, each the median of `SELFSUP_BENCH_REPEATS` rounds (default 5):
//! decode only; the view pair only (from decoded images); decode + pair on one thread; decode +
//! pair on `SELFSUP_PHOTO_THREADS` threads (default 2; a comma-separated list such as
//! `2,4,8,16` runs that stage once per count) working on disjoint images. Each stage
//! reports images per wall-clock second and images per CPU second (the process's user + system
//! time over all threads): on a shared machine the second is the stable per-core figure.
//! `SELFSUP_BENCH_ROUNDS_ONLY=1` prints one line per round instead (the side-by-side script
//! alternates the tools round by round).

use std::path::PathBuf;
use std::time::Instant;

use selfsup::augment::{Scale, ViewTransform};
use selfsup::data::decode_image;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Photos {
    names: Vec<String>,
    bytes: Vec<Vec<u8>>,
}

fn read_photos(dir: &str) -> selfsup::Result<Photos> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| selfsup::Error::Io {
            path: dir.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "jpeg"))
        .collect();
    paths.sort();
    let mut photos = Photos {
        names: Vec::new(),
        bytes: Vec::new(),
    };
    for path in paths {
        photos
            .bytes
            .push(std::fs::read(&path).map_err(|source| selfsup::Error::Io {
                path: path.clone(),
                source,
            })?);
        photos.names.push(path.display().to_string());
    }
    Ok(photos)
}

/// Decodes and augments images `first, first + step, ...` below `count`; returns images done.
fn pipeline(
    photos: &Photos,
    transform: &ViewTransform,
    round: u64,
    (first, step, count): (usize, usize, usize),
    decode: bool,
    views: bool,
) -> selfsup::Result<usize> {
    let side = transform.view_sizes()[0];
    let mut a = vec![0.0f32; 3 * side * side];
    let mut b = vec![0.0f32; 3 * side * side];
    let decoded: Vec<_> = if decode {
        Vec::new()
    } else {
        let pairs = photos.bytes.iter().zip(&photos.names);
        pairs
            .map(|(b, n)| decode_image(b, n))
            .collect::<Result<_, _>>()?
    };
    let mut done = 0;
    for i in (first..count).step_by(step) {
        let k = i % photos.bytes.len();
        let image = if decode {
            decode_image(&photos.bytes[k], &photos.names[k])?
        } else {
            decoded[k].clone()
        };
        if views {
            transform.apply(&image, [round, 0, i as u64], &mut [&mut a, &mut b])?;
        }
        std::hint::black_box(&a);
        done += 1;
    }
    Ok(done)
}

/// CPU seconds used by this process so far, all threads (user + system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Images per wall-clock second and per CPU second (all threads' CPU time).
fn images_per_second(
    photos: &Photos,
    transform: &ViewTransform,
    round: u64,
    count: usize,
    threads: usize,
    (decode, views): (bool, bool),
) -> selfsup::Result<(f64, f64)> {
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let done: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    pipeline(photos, transform, round, (t, threads, count), decode, views)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .sum::<selfsup::Result<usize>>()
    })?;
    let cpu = cpu_seconds() - cpu_start;
    Ok((
        done as f64 / start.elapsed().as_secs_f64(),
        done as f64 / cpu,
    ))
}

/// The thread counts of the last stage: `SELFSUP_PHOTO_THREADS`, one count or a list.
fn thread_counts() -> selfsup::Result<Vec<usize>> {
    let value = std::env::var("SELFSUP_PHOTO_THREADS").unwrap_or_else(|_| "2".into());
    value
        .split(',')
        .map(|t| match t.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(selfsup::Error::invalid_config(
                "SELFSUP_PHOTO_THREADS",
                format!("{t:?}"),
                "a positive thread count, or a list such as 2,4,8,16",
            )),
        })
        .collect()
}

fn main() -> selfsup::Result<()> {
    let dir =
        std::env::var("SELFSUP_PHOTOS_DIR").unwrap_or_else(|_| "../shared/data/photos".into());
    let repeats: usize = env_or("SELFSUP_BENCH_REPEATS", 5);
    let per_photo: usize = env_or("SELFSUP_PHOTO_REPEAT", 30);
    let thread_counts = thread_counts()?;
    let rounds_only = std::env::var("SELFSUP_BENCH_ROUNDS_ONLY").is_ok_and(|v| v == "1");
    let photos = read_photos(&dir)?;
    if photos.bytes.is_empty() {
        return Err(selfsup::Error::InvalidDataset {
            path: dir,
            reason: "no .jpg files".into(),
        });
    }
    let transform = ViewTransform::byol(Scale::Full(224));
    let count = per_photo * photos.bytes.len();
    let mut stages = vec![
        ("decode only", 1, (true, false)),
        ("BYOL 224 pair only (decoded sources)", 1, (false, true)),
        ("decode + BYOL 224 pair, 1 thread", 1, (true, true)),
    ];
    for threads in thread_counts {
        stages.push(("decode + BYOL 224 pair", threads, (true, true)));
    }
    println!(
        "{} photos from {dir}, {count} images per round, {repeats} rounds",
        photos.bytes.len()
    );
    for (name, threads, work) in stages {
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for round in 0..=repeats {
            let (w, c) =
                images_per_second(&photos, &transform, round as u64, count, threads, work)?;
            if round > 0 {
                if rounds_only {
                    println!(
                        "round {round}: {name}, {threads} thread(s): {w:.1} images/s, {c:.1} images per CPU second"
                    );
                }
                wall.push(w);
                cpu.push(c);
            }
        }
        println!(
            "{name}, {threads} thread(s): median {:.1} images/s, {:.1} images per CPU second",
            median(wall),
            median(cpu)
        );
    }
    Ok(())
}
