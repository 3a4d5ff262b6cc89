//! Datasets (image folder, CIFAR binary, in memory), decoding of every colour type, bad input,
//! and the seeded parallel loader.

mod common;

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use selfsup::Error;
use selfsup::augment::{Scale, ViewTransform};
use selfsup::data::{
    CifarBinary, CifarFormat, CifarSplit, ImageDataset, ImageFolder, InMemoryDataset, LoaderConfig,
    OnCorrupt, Subset, ViewLoader, decode_image, holdout_last_per_class,
};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        seed: 42,
        drop_last: false,
        workers,
        prefetch: 0,
    }
}

fn random_images(n: usize, side: u32, seed: u64) -> Vec<RgbImage> {
    let mut rng = selfsup::augment::AugmentRng::new(seed);
    (0..n)
        .map(|_| {
            RgbImage::from_fn(side, side, |_, _| {
                image::Rgb([
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                ])
            })
        })
        .collect()
}

fn copy_sample(to: &Path) {
    for class in std::fs::read_dir(SAMPLE).unwrap() {
        let class = class.unwrap().path();
        if !class.is_dir() {
            continue;
        }
        let dst = to.join(class.file_name().unwrap());
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(&class).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn decodes_the_real_cifar_jpegs_as_an_image_folder() {
    let folder = ImageFolder::open(SAMPLE).unwrap();
    assert_eq!(folder.len(), 20);
    assert_eq!(
        folder.classes(),
        [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck"
        ]
    );
    for i in 0..folder.len() {
        assert_eq!(folder.label(i), Some(i / 2));
        let image = folder.image(i).unwrap();
        assert_eq!((image.width(), image.height()), (32, 32));
        // Real photographs: not constant.
        let raw = image.as_raw();
        assert!(raw.iter().any(|&v| v != raw[0]));
    }
    assert!(folder.source_name(3).ends_with("automobile/0001.jpg"));
}

#[test]
fn every_colour_type_becomes_rgb8() {
    let encode =
        |color: png::ColorType, depth: png::BitDepth, data: &[u8], palette: Option<&[u8]>| {
            let mut out = Vec::new();
            {
                let mut enc = png::Encoder::new(&mut out, 2, 1);
                enc.set_color(color);
                enc.set_depth(depth);
                if let Some(p) = palette {
                    enc.set_palette(p.to_vec());
                }
                let mut w = enc.write_header().unwrap();
                w.write_image_data(data).unwrap();
            }
            out
        };
    let gray = encode(
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &[10, 200],
        None,
    );
    let rgba = encode(
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        &[1, 2, 3, 0, 4, 5, 6, 255],
        None,
    );
    let gray16 = encode(
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &[0xFF, 0xFF, 0x80, 0x00],
        None,
    );
    let rgb16 = encode(
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        &[0xFF, 0xFF, 0, 0, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],
        None,
    );
    let palette = encode(
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &[1, 0],
        Some(&[9, 8, 7, 100, 150, 250]),
    );
    let cases: [(&str, Vec<u8>, [u8; 6]); 5] = [
        ("gray", gray, [10, 10, 10, 200, 200, 200]),
        ("rgba", rgba, [1, 2, 3, 4, 5, 6]),
        ("gray16", gray16, [255, 255, 255, 128, 128, 128]),
        ("rgb16", rgb16, [255, 0, 128, 0, 255, 255]),
        ("palette", palette, [100, 150, 250, 9, 8, 7]),
    ];
    for (name, bytes, expect) in cases {
        let image = decode_image(&bytes, name).unwrap();
        assert_eq!(image.as_raw().as_slice(), &expect, "{name}");
    }
}

#[test]
fn corrupt_truncated_and_non_image_files_are_named_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample(dir.path());
    let good = std::fs::read(format!("{SAMPLE}/cat/0000.jpg")).unwrap();
    std::fs::write(
        dir.path().join("cat/truncated.jpg"),
        &good[..good.len() / 3],
    )
    .unwrap();
    std::fs::write(dir.path().join("dog/notes.jpg"), b"this is not an image").unwrap();

    // Reading the file is an error naming it.
    let folder = ImageFolder::open(dir.path()).unwrap();
    let bad = (0..folder.len())
        .find(|&i| folder.source_name(i).ends_with("notes.jpg"))
        .unwrap();
    let e = folder.image(bad).unwrap_err().to_string();
    assert!(e.contains("notes.jpg"), "{e}");
    let truncated = (0..folder.len())
        .find(|&i| folder.source_name(i).ends_with("truncated.jpg"))
        .unwrap();
    let e = folder.image(truncated).unwrap_err().to_string();
    assert!(e.contains("truncated.jpg"), "{e}");

    // Verification fails on the first bad file by default...
    let mut strict = ImageFolder::open(dir.path()).unwrap();
    let e = strict.verify(OnCorrupt::Fail, 2).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    // ...or leaves both out and counts them.
    let mut lenient = ImageFolder::open(dir.path()).unwrap().with_cache(true);
    let report = lenient.verify(OnCorrupt::Skip, 2).unwrap();
    assert_eq!(report.readable, 20);
    assert_eq!(report.skipped.len(), 2);
    assert_eq!(lenient.len(), 20);
    assert_eq!(report.min_size, Some((32, 32)));
    assert_eq!(lenient.min_image_size(), Some((32, 32)));
    assert_eq!(lenient.label(lenient.len() - 1), Some(9));
}

#[test]
fn empty_folders_and_bad_paths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = ImageFolder::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("contains no images"), "{e}");
    std::fs::create_dir_all(dir.path().join("cats")).unwrap();
    std::fs::create_dir_all(dir.path().join("dogs")).unwrap();
    std::fs::copy(
        format!("{SAMPLE}/cat/0000.jpg"),
        dir.path().join("cats/a.jpg"),
    )
    .unwrap();
    let e = ImageFolder::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("class folder `dogs` contains no images"), "{e}");
    let e = ImageFolder::open(dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("is not a folder"),
        "{e}"
    );

    // A flat folder is an unlabelled dataset.
    let flat = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{SAMPLE}/cat/0000.jpg"), flat.path().join("a.jpg")).unwrap();
    std::fs::copy(format!("{SAMPLE}/dog/0000.jpg"), flat.path().join("b.JPEG")).unwrap();
    std::fs::write(flat.path().join("readme.txt"), "not an image").unwrap();
    let unlabeled = ImageFolder::open(flat.path()).unwrap();
    assert_eq!(unlabeled.len(), 2);
    assert_eq!(unlabeled.label(0), None);
    assert!(unlabeled.classes().is_empty());
}

#[test]
fn cifar_binary_records_are_read_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let mut batch = Vec::new();
    for label in [3u8, 7] {
        batch.push(label);
        batch.extend((0..1024).map(|_| 10 * label)); // red plane
        batch.extend((0..1024).map(|i| (i % 256) as u8)); // green plane
        batch.extend((0..1024).map(|_| 255)); // blue plane
    }
    for i in 1..=5 {
        std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), &batch).unwrap();
    }
    let c10 = CifarBinary::open_dir(dir.path(), CifarFormat::Cifar10, CifarSplit::Train).unwrap();
    assert_eq!(c10.len(), 10);
    assert_eq!(c10.label(1), Some(7));
    assert_eq!(c10.classes()[3], "cat");
    let image = c10.image(1).unwrap();
    assert_eq!(image.get_pixel(5, 1).0, [70, 37, 255]); // green = (32 + 5) % 256
    assert!(c10.source_name(3).contains("data_batch_2.bin record 1"));
    assert_eq!(c10.min_image_size(), Some((32, 32)));

    let mut c100 = vec![4u8, 42];
    c100.extend(std::iter::repeat_n(9u8, 3072));
    let path = dir.path().join("train.bin");
    std::fs::write(&path, &c100).unwrap();
    let fine =
        CifarBinary::open_files(std::slice::from_ref(&path), CifarFormat::Cifar100Fine).unwrap();
    assert_eq!(fine.label(0), Some(42));
    let coarse = CifarBinary::open_files(&[path], CifarFormat::Cifar100Coarse).unwrap();
    assert_eq!(coarse.label(0), Some(4));

    // Truncated file, missing split.
    std::fs::write(dir.path().join("test_batch.bin"), &batch[..5000]).unwrap();
    let e = CifarBinary::open_dir(dir.path(), CifarFormat::Cifar10, CifarSplit::Test)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("3073-byte"),
        "{e}"
    );
    let e = CifarBinary::open_dir(
        dir.path().join("nope"),
        CifarFormat::Cifar10,
        CifarSplit::Train,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("data_batch_1.bin"), "{e}");
}

#[test]
fn same_seed_gives_the_same_batches_whatever_the_thread_count() {
    let device = common::device();
    let dataset: Arc<dyn ImageDataset> =
        Arc::new(ImageFolder::open(SAMPLE).unwrap().with_cache(true));
    let transform = ViewTransform::byol(Scale::Cifar);
    let one = ViewLoader::new(dataset.clone(), transform.clone(), config(6, 1), &device).unwrap();
    let three = ViewLoader::new(dataset.clone(), transform.clone(), config(6, 3), &device).unwrap();
    assert_eq!(one.batches_per_epoch(), 4);
    let collect = |l: &ViewLoader, e| {
        let mut batches = l.epoch(e);
        let mut out = Vec::new();
        while let Some(b) = batches.next_host() {
            out.push(b.unwrap());
        }
        out
    };
    let a = collect(&one, 0);
    let b = collect(&three, 0);
    assert_eq!(a, b);
    // Every image exactly once; the last batch is the remainder.
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(a.last().unwrap().len(), 2);
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    // Labels follow the images.
    for batch in &a {
        let labels = batch.labels.as_ref().unwrap();
        for (i, l) in batch.indices.iter().zip(labels) {
            assert_eq!(*l, i / 2);
        }
    }
    // Another epoch shuffles differently and draws other views.
    let c = collect(&one, 1);
    assert_ne!(a[0].indices, c[0].indices);
    // Resuming mid-epoch gives the tail of the same epoch.
    let mut tail = one.epoch_from(0, 2);
    assert_eq!(tail.remaining(), 2);
    assert_eq!(tail.next_host().unwrap().unwrap(), a[2]);
    // Tensors on the device have the view shapes.
    let batch = one.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.views.len(), 2);
    assert_eq!(batch.views[0].dims(), [6, 3, 32, 32]);
    assert_eq!(batch.num_global, 2);
    assert_eq!(batch.label_tensor(&device).unwrap().dims(), [6]);
}

#[test]
fn drop_last_multi_crop_and_early_drop() {
    let device = common::device();
    let dataset: Arc<dyn ImageDataset> =
        Arc::new(InMemoryDataset::unlabeled(random_images(10, 40, 1)).unwrap());
    let mut cfg = config(4, 2);
    cfg.drop_last = true;
    let loader =
        ViewLoader::new(dataset, ViewTransform::swav(Scale::Cifar, 3), cfg, &device).unwrap();
    assert_eq!(loader.batches_per_epoch(), 2);
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 2);
    let dims: Vec<_> = batches[0].views.iter().map(|v| v.dims()).collect();
    assert_eq!(
        dims,
        vec![
            [4, 3, 32, 32],
            [4, 3, 32, 32],
            [4, 3, 16, 16],
            [4, 3, 16, 16],
            [4, 3, 16, 16]
        ]
    );
    assert!(batches[0].labels.is_none());
    // Dropping an epoch early stops its workers without hanging.
    let mut epoch = loader.epoch(1);
    let _ = epoch.next();
    drop(epoch);
}

#[test]
fn bad_loader_input_is_reported_before_training() {
    let device = common::device();
    let small: Arc<dyn ImageDataset> =
        Arc::new(InMemoryDataset::unlabeled(random_images(8, 16, 2)).unwrap());
    // A batch larger than the dataset.
    let e = ViewLoader::new(
        small.clone(),
        ViewTransform::byol(Scale::Cifar),
        config(9, 1),
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("batch_size") && e.contains('9') && e.contains("dataset size 8"),
        "{e}"
    );
    let e = ViewLoader::new(
        small.clone(),
        ViewTransform::byol(Scale::Cifar),
        config(0, 1),
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("batch_size"), "{e}");
    // 16x16 images are smaller than 32-pixel views.
    let e = ViewLoader::new(
        small,
        ViewTransform::byol(Scale::Cifar),
        config(4, 1),
        &device,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            Error::ImageTooSmall {
                width: 16,
                height: 16,
                required: 32,
                ..
            }
        ),
        "{e}"
    );
    // In a folder, the small image is named when its batch is built.
    let dir = tempfile::tempdir().unwrap();
    copy_sample(dir.path());
    RgbImage::from_pixel(20, 24, image::Rgb([1, 2, 3]))
        .save(dir.path().join("cat/tiny.png"))
        .unwrap();
    let folder: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(dir.path()).unwrap());
    let loader = ViewLoader::new(
        folder,
        ViewTransform::byol(Scale::Cifar),
        config(21, 2),
        &device,
    )
    .unwrap();
    let e = loader.epoch(0).next().unwrap().err().unwrap().to_string();
    assert!(e.contains("tiny.png") && e.contains("20x24"), "{e}");
    // Empty in-memory dataset and invalid transform.
    assert!(InMemoryDataset::unlabeled(Vec::new()).is_err());
    let ok: Arc<dyn ImageDataset> =
        Arc::new(InMemoryDataset::unlabeled(random_images(4, 32, 3)).unwrap());
    let mut t = ViewTransform::byol(Scale::Cifar);
    t.groups[0].recipe.horizontal_flip = -0.1;
    let e = ViewLoader::new(ok, t, config(2, 1), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("horizontal_flip"), "{e}");
}

#[test]
fn holdout_split_takes_the_last_images_of_each_class() {
    let folder: Arc<dyn ImageDataset> = Arc::new(ImageFolder::open(SAMPLE).unwrap());
    let (train, val) = holdout_last_per_class(&*folder, 1).unwrap();
    assert_eq!(train, (0..20).step_by(2).collect::<Vec<_>>());
    assert_eq!(val, (1..20).step_by(2).collect::<Vec<_>>());
    let val_set = Subset::new(folder.clone(), val).unwrap();
    assert_eq!(val_set.len(), 10);
    assert!(val_set.source_name(0).ends_with("airplane/0001.jpg"));
    assert_eq!(val_set.label(9), Some(9));
    let e = holdout_last_per_class(&*folder, 2).unwrap_err().to_string();
    assert!(e.contains("airplane") && e.contains("leaves none"), "{e}");
    let labels: Vec<usize> = vec![0, 1];
    let mem = InMemoryDataset::labeled(random_images(2, 8, 4), labels, vec!["a".into()]);
    assert!(mem.unwrap_err().to_string().contains("labels[1]"));
}

/// A dataset whose image 5 panics, as a buggy user dataset or decoder might.
struct Panicking(InMemoryDataset);

impl ImageDataset for Panicking {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn image(&self, index: usize) -> selfsup::Result<Arc<RgbImage>> {
        if index == 5 {
            panic!("decoder bug on image 5");
        }
        self.0.image(index)
    }
    fn label(&self, index: usize) -> Option<usize> {
        self.0.label(index)
    }
    fn classes(&self) -> &[String] {
        self.0.classes()
    }
    fn source_name(&self, index: usize) -> String {
        self.0.source_name(index)
    }
}

#[test]
fn a_panicking_worker_ends_the_epoch_with_its_error_in_bounded_time() {
    let images = InMemoryDataset::unlabeled(random_images(24, 32, 3)).unwrap();
    let dataset: Arc<dyn ImageDataset> = Arc::new(Panicking(images));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let loader = ViewLoader::new(
            dataset,
            ViewTransform::byol(Scale::Cifar),
            config(4, 3),
            &burn::tensor::Device::flex(),
        )
        .unwrap();
        let results: Vec<_> = loader.epoch(0).map(|b| b.map(|b| b.len())).collect();
        std::panic::set_hook(hook);
        let _ = tx.send(results);
    });
    let results = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the loader hung after a worker panicked");
    let error = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error for the panicked batch");
    let text = error.to_string();
    assert!(matches!(error, Error::Worker(_)), "{text}");
    assert!(
        text.contains("panicked") && text.contains("decoder bug on image 5"),
        "{text}"
    );
}

#[test]
fn a_corrupt_pack_header_is_an_error_not_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pack");
    selfsup::data::PackedImages::write(&good, &["a".into()], &[(0, vec![1, 2, 3])]).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // The class count (bytes 8..12) and the image count claim four billion entries.
    for (at, what) in [(8, "class names"), (8 + 4 + 2 + 1, "images")] {
        let mut bad = bytes.clone();
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let path = dir.path().join("bad.pack");
        std::fs::write(&path, &bad).unwrap();
        let e = selfsup::data::PackedImages::open(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.pack") && e.contains(what), "{e}");
    }
}
