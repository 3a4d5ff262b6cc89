//! The fault campaign: seeded mutations (truncated, bit-flipped, length-corrupted, spliced) of
//! every input format the crate reads, and out-of-range values in every numeric field of a
//! configuration. Every case must end in `Ok` or an `Err` with a message, never a panic or a
//! hang (each case is time-boxed). `SELFSUP_FUZZ_CASES` multiplies the case counts (a longer
//! campaign than CI runs; `benches/fault_campaign.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Duration;

use burn::tensor::{Bytes, Device};
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::data::PackedImages;
use selfsup::data::{
    CifarBinary, CifarFormat, ImageDataset, ImageFolder, LoaderConfig, decode_image,
};
use selfsup::method::{AnyMethodConfig, Preset};
use selfsup::train::{
    CHECKPOINT_FILE, Checkpoint, Control, PretrainConfig, PretrainOptions, load_checkpoint,
    pretrain_with,
};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");
const PACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/cifar10-sample-val.pack");
/// How long one case may take before it counts as a hang.
const TIME_BOX: Duration = Duration::from_secs(30);

/// How a case ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Accepted,
    Refused(String),
    Panicked(String),
    Hung,
}

/// Runs `case` on its own thread with a time box, catching panics.
fn outcome(case: impl FnOnce() -> selfsup::Result<()> + Send + 'static) -> Outcome {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case));
        let _ = tx.send(match result {
            Ok(Ok(())) => Outcome::Accepted,
            Ok(Err(e)) => Outcome::Refused(e.to_string()),
            Err(panic) => Outcome::Panicked(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        });
    });
    rx.recv_timeout(TIME_BOX).unwrap_or(Outcome::Hung)
}

/// A seeded byte mutator (splitmix64).
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Case `case` of the four kinds: truncation, bit flips, a corrupted length field (a
    /// 4- or 8-byte little-endian word near the start set to 0, a huge or a random value),
    /// and a spliced run of random bytes.
    fn mutate(&mut self, bytes: &[u8], case: usize) -> Vec<u8> {
        let mut out = bytes.to_vec();
        match case % 4 {
            0 => out.truncate(self.below(bytes.len())),
            1 => {
                for _ in 0..1 + self.below(8) {
                    let at = self.below(out.len());
                    out[at] ^= 1 << self.below(8);
                }
            }
            2 => {
                let width = if self.next().is_multiple_of(2) { 4 } else { 8 };
                let at = self.below(out.len().min(256).saturating_sub(width));
                let value = match self.below(3) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => self.next(),
                };
                if at + width <= out.len() {
                    out[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            _ => {
                let at = self.below(out.len());
                let len = 1 + self.below(64);
                let noise: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
                out.splice(at..(at + len).min(out.len()), noise);
            }
        }
        out
    }
}

/// Cases per format: `base` times `SELFSUP_FUZZ_CASES` (default 1).
fn cases(base: usize) -> usize {
    base * std::env::var("SELFSUP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs `count` mutations of `bytes` through `parse`, prints the tally, and fails on any
/// panic or hang (or an error without a message).
fn campaign(
    name: &str,
    bytes: &[u8],
    count: usize,
    seed: u64,
    parse: impl Fn(Vec<u8>) -> selfsup::Result<()> + Send + Sync + 'static,
) {
    let parse = Arc::new(parse);
    let mut mutator = Mutator(seed);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..count {
        let input = mutator.mutate(bytes, case);
        let parse = parse.clone();
        match outcome(move || parse(input)) {
            Outcome::Accepted => accepted += 1,
            Outcome::Refused(message) => {
                assert!(
                    !message.trim().is_empty(),
                    "{name} case {case}: empty error"
                );
                refused += 1;
            }
            Outcome::Panicked(message) => panic!("{name} case {case} panicked: {message}"),
            Outcome::Hung => panic!("{name} case {case} hung for {TIME_BOX:?}"),
        }
    }
    eprintln!(
        "fault campaign | {name} | {count} cases | {refused} refused with a message | \
         {accepted} accepted | 0 panics | 0 hangs"
    );
}

/// A file of `bytes` in a fresh temporary folder (kept alive by the returned guard).
fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// A checkpoint of a one-epoch tiny BYOL run, and the folder holding it.
fn checkpoint() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(4).with_stages(2));
    let mut c = PretrainConfig::cifar(AnyMethodConfig::byol(Preset::Cifar), backbone, 1);
    c.head_width = 1.0 / 128.0;
    c.loader = LoaderConfig {
        batch_size: 10,
        workers: 1,
        ..LoaderConfig::default()
    };
    c.progress = false;
    c.output_dir = Some(dir.path().to_path_buf());
    let data: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(SAMPLE).unwrap());
    pretrain_with(&c, data, &Device::flex(), PretrainOptions::default()).unwrap();
    let bytes = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
    (dir, bytes)
}

/// FNV-1a 64, the checkpoint's checksum (documented in `train::checkpoint`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn corrupt_checkpoints_are_refused() {
    let (_dir, bytes) = checkpoint();
    campaign("checkpoint", &bytes, cases(200), 1, |input| {
        Checkpoint::<AnyMethodConfig>::from_bytes(&input, Path::new("fuzzed.ckpt")).map(|_| ())
    });
    // Mutations behind a valid checksum reach the section, model and optimiser parsers.
    let body = bytes[..bytes.len() - 8].to_vec();
    campaign(
        "checkpoint, checksum fixed",
        &body,
        cases(120),
        2,
        |mut input| {
            let sum = fnv1a(&input);
            input.extend_from_slice(&sum.to_le_bytes());
            let (_dir, path) = temp_file("fuzzed.ckpt", &input);
            let ckpt = Checkpoint::read(&path)?;
            burn::optim::OptimizerRecord::from_bytes(Bytes::from_bytes_vec(ckpt.optimizer.clone()))
                .map_err(|e| selfsup::Error::Checkpoint {
                    path: path.display().to_string(),
                    reason: format!("optimizer: {e}"),
                })?;
            load_checkpoint(&path, &Device::flex()).map(|_| ())
        },
    );
}

#[test]
fn corrupt_packs_are_refused() {
    let bytes = std::fs::read(PACK).unwrap();
    campaign("pack", &bytes, cases(200), 3, |input| {
        let (_dir, path) = temp_file("fuzzed.pack", &input);
        let pack = PackedImages::open(&path)?;
        for i in 0..pack.len() {
            pack.image(i)?;
        }
        Ok(())
    });
}

#[test]
fn corrupt_image_files_are_refused() {
    let jpeg_path = std::fs::read_dir(Path::new(SAMPLE).join("cat"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let jpeg = std::fs::read(jpeg_path).unwrap();
    campaign("JPEG", &jpeg, cases(200), 4, |input| {
        decode_image(&input, "fuzzed.jpg").map(|_| ())
    });
    let image = image::RgbImage::from_fn(24, 20, |x, y| image::Rgb([x as u8 * 9, y as u8 * 11, 7]));
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    campaign("PNG", &png, cases(200), 5, |input| {
        decode_image(&input, "fuzzed.png").map(|_| ())
    });
}

#[test]
fn corrupt_cifar_binaries_are_refused() {
    // Six CIFAR-10 records: a label byte and 3,072 pixel bytes each.
    let bytes: Vec<u8> = (0..6 * 3073).map(|i| (i * 31 % 251) as u8 % 10).collect();
    campaign("CIFAR-10 binary", &bytes, cases(100), 6, |input| {
        let (_dir, path) = temp_file("data_batch_1.bin", &input);
        let set = CifarBinary::open_files(&[path], CifarFormat::Cifar10)?;
        for i in 0..set.len() {
            set.image(i)?;
        }
        Ok(())
    });
}

/// A printed configuration of every method at both scales, joined.
fn printed_configs() -> Vec<String> {
    AnyMethodConfig::NAMES
        .iter()
        .flat_map(|name| {
            Preset::ALL.map(|preset| {
                let config =
                    PretrainConfig::builtin(name, PretrainConfig::resnet18_cifar(16), preset, 10)
                        .unwrap();
                toml::to_string(&config).unwrap()
            })
        })
        .collect()
}

fn parse_config(text: &str) -> selfsup::Result<PretrainConfig> {
    toml::from_str::<PretrainConfig>(text)
        .map_err(|e| selfsup::Error::invalid_config("config", e.to_string().trim(), "TOML"))
}

#[test]
fn corrupt_configuration_files_are_refused() {
    for (i, text) in printed_configs().into_iter().enumerate() {
        campaign(
            "TOML configuration",
            text.as_bytes(),
            cases(40),
            10 + i as u64,
            |input| {
                let text = String::from_utf8_lossy(&input).into_owned();
                parse_config(&text)?.check()
            },
        );
    }
}

/// The dotted paths of every numeric value in a TOML tree.
fn numeric_paths(value: &toml::Value, path: String, out: &mut Vec<String>) {
    match value {
        toml::Value::Integer(_) | toml::Value::Float(_) => out.push(path),
        toml::Value::Table(t) => {
            for (k, v) in t {
                let next = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                numeric_paths(v, next, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                numeric_paths(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `root` with the value at `path` replaced by `new`.
fn replaced(root: &toml::Value, path: &str, new: toml::Value) -> toml::Value {
    let mut root = root.clone();
    let mut at = &mut root;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (
                k,
                Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
            ),
            None => (part, None),
        };
        at = at.get_mut(key).unwrap();
        if let Some(i) = index {
            at = at.get_mut(i).unwrap();
        }
    }
    *at = new;
    root
}

/// The key an error about `path` should name: its last segment without an index.
fn key_of(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

#[test]
fn out_of_range_values_in_every_numeric_field_are_named() {
    // (accepted, refused naming the field, accepted but stopped in training with an error)
    let mut tally = (0usize, 0usize, 0usize);
    let data: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(SAMPLE).unwrap().with_cache(true));
    // BYOL, SwAV, MoCo and DINO at CIFAR scale, DeepCluster-v2 at ImageNet scale: every kind of
    // field (predictor, prototypes and queue, teacher schedule, memory bank, multi-crop).
    let configs = printed_configs();
    for text in [
        &configs[0],
        &configs[6],
        &configs[12],
        &configs[14],
        &configs[17],
    ] {
        let root: toml::Value = toml::from_str(text).unwrap();
        let mut paths = Vec::new();
        numeric_paths(&root, String::new(), &mut paths);
        for path in &paths {
            let integer = text_value_is_integer(&root, path);
            let bad: Vec<toml::Value> = if integer {
                vec![
                    toml::Value::Integer(-1),
                    toml::Value::Integer(0),
                    toml::Value::Integer(1 << 62),
                ]
            } else {
                vec![
                    toml::Value::Float(-1.0),
                    toml::Value::Float(0.0),
                    toml::Value::Float(f64::NAN),
                    toml::Value::Float(1e300),
                ]
            };
            for value in bad {
                let shown = value.to_string();
                // Zero is the usual edge; negative and huge values are the ones that could
                // reach an allocation or an endless loop, so accepted ones run a step.
                let run = shown != "0" && shown != "0.0";
                let edited = toml::to_string(&replaced(&root, path, value)).unwrap();
                let data = data.clone();
                let result = outcome(move || {
                    let config = parse_config(&edited)?;
                    config.check()?;
                    if run {
                        // A value the checks let through may still stop training (a
                        // learning rate of 1e300 diverges at the first step): that must be
                        // an error too, marked so that it is told apart here.
                        short_run(config, data)
                            .map_err(|e| selfsup::Error::Worker(format!("RUNTIME: {e}")))?;
                    }
                    Ok(())
                });
                match result {
                    Outcome::Accepted => tally.0 += 1,
                    Outcome::Refused(message) if message.contains("RUNTIME: ") => tally.2 += 1,
                    Outcome::Refused(message) => {
                        tally.1 += 1;
                        assert!(
                            message.contains(key_of(path)) || message.contains("config"),
                            "{path} = {shown}: the error does not name the field: {message}"
                        );
                    }
                    other => panic!("{path} = {shown}: {other:?}"),
                }
            }
        }
    }
    eprintln!(
        "fault campaign | out-of-range configuration values | {} cases | {} refused naming \
         the field | {} accepted, stopped by an error in training | {} accepted | 0 panics | \
         0 hangs",
        tally.0 + tally.1 + tally.2,
        tally.1,
        tally.2,
        tally.0
    );
}

fn text_value_is_integer(root: &toml::Value, path: &str) -> bool {
    let mut at = root;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (
                k,
                Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
            ),
            None => (part, None),
        };
        at = &at[key];
        if let Some(i) = index {
            at = &at[i];
        }
    }
    at.is_integer()
}

/// One step of `config` shrunk to the tiny convnet and a batch of 4 (the accepted values of
/// the other fields kept), then stop.
fn short_run(mut config: PretrainConfig, data: Arc<dyn ImageDataset>) -> selfsup::Result<()> {
    config.backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(4).with_stages(2));
    config.head_width = config.head_width.min(1.0 / 64.0);
    config.loader.batch_size = 4;
    config.loader.workers = config.loader.workers.min(2);
    config.loader.prefetch = config.loader.prefetch.min(4);
    config.progress = false;
    config.output_dir = None;
    for group in &mut config.views.groups {
        group.count = group.count.min(2);
        group.recipe.allow_upscaling = true;
    }
    if let AnyMethodConfig::DeepCluster(c) = &mut config.method {
        c.num_prototypes = c.num_prototypes.iter().map(|&k| k.min(4)).collect();
    }
    if let AnyMethodConfig::Moco(c) = &mut config.method {
        c.queue_length = c.queue_length.min(64);
    }
    let options = PretrainOptions {
        on_step: Some(Box::new(|_| Control::Stop)),
        ..Default::default()
    };
    pretrain_with(&config, data, &Device::flex(), options).map(|_| ())
}
