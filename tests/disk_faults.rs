//! A full disk and a read-only output folder, for real: small tmpfs mounts (this needs root
//! and a kernel that lets the test mount; elsewhere the test says so and checks nothing). The
//! run must stop with an error naming the file and the cause, and a checkpoint already
//! written must stay loadable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use burn::tensor::Device;
use selfsup::Error;
use selfsup::backbone::{BackboneConfig, ConvNetConfig};
use selfsup::data::{ImageDataset, ImageFolder, LoaderConfig};
use selfsup::method::{AnyMethodConfig, Preset};
use selfsup::train::{CHECKPOINT_FILE, Checkpoint, PretrainConfig, pretrain};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

/// A tmpfs mounted at a fresh folder, unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    /// A tmpfs with `options` (e.g. `size=64k`, `ro`), or `None` when mounting is not allowed.
    fn tmpfs(options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn config(epochs: usize, out: &Path) -> PretrainConfig {
    let backbone = BackboneConfig::ConvNet(ConvNetConfig::new().with_width(8).with_stages(2));
    let mut c = PretrainConfig::cifar(AnyMethodConfig::byol(Preset::Cifar), backbone, epochs);
    c.head_width = 1.0 / 32.0;
    c.loader = LoaderConfig {
        batch_size: 10,
        workers: 1,
        ..LoaderConfig::default()
    };
    c.progress = false;
    c.output_dir = Some(out.to_path_buf());
    c
}

fn sample() -> Arc<dyn ImageDataset> {
    Arc::new(ImageFolder::open(SAMPLE).unwrap().with_cache(true))
}

/// The size of a checkpoint of `config(…)`, written to an ordinary folder.
fn checkpoint_size() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    pretrain(&config(1, dir.path()), sample(), &Device::flex()).unwrap();
    std::fs::metadata(dir.path().join(CHECKPOINT_FILE))
        .unwrap()
        .len()
}

#[test]
fn a_full_disk_stops_the_run_and_keeps_the_last_checkpoint() {
    let size = checkpoint_size();
    // Room for one checkpoint and the metrics, not for the next one beside it (the atomic
    // write keeps the old file until the new one is complete).
    let room = size + size / 2;
    let Some(mount) = Mount::tmpfs(&format!("size={room}")) else {
        eprintln!("skipped: this machine does not let the test mount a tmpfs (not root?)");
        return;
    };
    let out: PathBuf = mount.path().join("run");
    let first = pretrain(&config(1, &out), sample(), &Device::flex()).unwrap();
    let path = first.checkpoint.unwrap();
    let before = std::fs::read(&path).unwrap();
    // Two more epochs: the checkpoint after the second does not fit.
    let mut longer = config(3, &out);
    longer.checkpoint_every_epochs = 1;
    let options = selfsup::train::PretrainOptions {
        resume: Some(path.clone()),
        ..Default::default()
    };
    let e = selfsup::train::pretrain_with(&longer, sample(), &Device::flex(), options).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Io { .. }), "{text}");
    assert!(
        text.contains("checkpoint.ckpt") && text.contains("No space left"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the last checkpoint changed"
    );
    Checkpoint::read(&path).unwrap();
    assert!(
        !out.join(format!("{CHECKPOINT_FILE}.tmp")).exists(),
        "a torn temporary file was left"
    );
}

#[test]
fn a_read_only_output_folder_is_refused_before_training() {
    let Some(mount) = Mount::tmpfs("ro,size=64k") else {
        eprintln!("skipped: this machine does not let the test mount a tmpfs (not root?)");
        return;
    };
    let e = pretrain(&config(1, mount.path()), sample(), &Device::flex()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Io { .. }), "{text}");
    assert!(
        text.contains(&mount.path().display().to_string()) && text.contains("Read-only"),
        "{text}"
    );
}
