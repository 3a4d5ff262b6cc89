//! Rebuilds the bundled CIFAR-10 sample (`data/cifar10-sample-*.pack`) from the JPEG folder of
//! `../shared/data/cifar10-train.tar.xz`: per class, images 0000-0399 for `train` and
//! 4900-4999 for `val`, copied byte for byte.
//!
//! ```text
//! mkdir -p target/data && tar -xJf ../shared/data/cifar10-train.tar.xz -C target/data
//! cargo run --release --example make_sample -- target/data/cifar10/train data
//! ```

use selfsup::data::{ImageDataset, ImageFolder, PackedImages};

fn main() -> selfsup::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let source = args
        .get(1)
        .map_or("target/data/cifar10/train", String::as_str);
    let out = std::path::PathBuf::from(args.get(2).map_or("data", String::as_str));
    let folder = ImageFolder::open(source)?;
    let classes = folder.classes().to_vec();
    for (split, range) in [("train", 0..400), ("val", 4900..5000)] {
        let mut images = Vec::new();
        for (i, file) in folder.files().iter().enumerate() {
            let number: usize = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            if range.contains(&number) {
                let bytes = std::fs::read(file).map_err(|source| selfsup::Error::Io {
                    path: file.clone(),
                    source,
                })?;
                images.push((folder.label(i).unwrap_or(0), bytes));
            }
        }
        let path = out.join(format!("cifar10-sample-{split}.pack"));
        PackedImages::write(&path, &classes, &images)?;
        println!("{}: {} images", path.display(), images.len());
    }
    Ok(())
}
