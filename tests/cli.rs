//! Every `selfsup` subcommand, run as a process on the 20 test JPEGs, and its bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cifar10-sample");

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .expect("the selfsup binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const TINY: [&str; 12] = [
    "--backbone",
    "convnet",
    "--width",
    "8",
    "--head-width",
    "0.05",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--workers",
    "2",
];

/// One checkpoint made by `selfsup pretrain`, shared by the evaluation tests.
fn checkpoint() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("selfsup-cli-{}", std::process::id()));
        let out = dir.to_str().unwrap().to_string();
        let mut args = vec![
            "pretrain",
            "--data",
            SAMPLE,
            "--val",
            SAMPLE,
            "--method",
            "simsiam",
            "--out",
            &out,
            "--no-progress",
            "--device",
            "cpu",
        ];
        args.extend(TINY);
        let o = selfsup(&args);
        assert!(o.status.success(), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains("kNN top-1") && t.contains("checkpoint:"), "{t}");
        assert!(dir.join("metrics.jsonl").is_file());
        dir.join("checkpoint.ckpt")
    })
}

#[test]
fn pretrain_then_resume_and_print_config() {
    let ckpt = checkpoint();
    assert!(ckpt.is_file());
    // --print-config writes TOML that --config reads back.
    let o = selfsup(&[
        "pretrain",
        "--data",
        SAMPLE,
        "--method",
        "byol",
        "--backbone",
        "convnet",
        "--width",
        "8",
        "--print-config",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let toml = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        toml.contains("name = \"byol\"") && toml.contains("[backbone.ConvNet]"),
        "{toml}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("byol.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = dir.path().join("run");
    let o = selfsup(&[
        "pretrain",
        "--data",
        SAMPLE,
        "--config",
        cfg.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--head-width",
        "0.05",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Resuming the finished run with more epochs continues from its checkpoint.
    let o = selfsup(&[
        "pretrain",
        "--data",
        SAMPLE,
        "--config",
        cfg.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--head-width",
        "0.05",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--device",
        "cpu",
        "--resume",
        out.join("checkpoint.ckpt").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("done: 4 steps"), "{}", text(&o));
}

#[test]
fn knn_subcommand() {
    let ckpt = checkpoint().to_str().unwrap();
    let o = selfsup(&[
        "knn",
        "--checkpoint",
        ckpt,
        "--train",
        SAMPLE,
        "--val",
        SAMPLE,
        "--k",
        "5",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("kNN (k = 5, T = 0.1) top-1") && text(&o).contains("airplane"),
        "{}",
        text(&o)
    );
}

#[test]
fn probe_subcommand() {
    let ckpt = checkpoint().to_str().unwrap();
    let o = selfsup(&[
        "probe",
        "--checkpoint",
        ckpt,
        "--train",
        SAMPLE,
        "--val",
        SAMPLE,
        "--epochs",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("linear probe top-1"), "{}", text(&o));
}

#[test]
fn finetune_subcommand() {
    let ckpt = checkpoint().to_str().unwrap();
    let o = selfsup(&[
        "finetune",
        "--checkpoint",
        ckpt,
        "--train",
        SAMPLE,
        "--val",
        SAMPLE,
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("fine-tuned top-1"), "{}", text(&o));
}

#[test]
fn export_subcommand() {
    let ckpt = checkpoint().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("backbone.safetensors");
    let o = selfsup(&[
        "export",
        "--checkpoint",
        ckpt,
        "--out",
        st.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    assert!(
        names.iter().any(|n| n == "blocks.0.conv.weight"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "blocks.1.bn.weight"), "{names:?}");
    let burn_file = dir.path().join("backbone.bpk");
    let o = selfsup(&[
        "export",
        "--checkpoint",
        ckpt,
        "--out",
        burn_file.to_str().unwrap(),
        "--format",
        "burn",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::metadata(&burn_file).unwrap().len() > 1000);
    // SimSiam keeps no momentum target to export.
    let target_file = dir.path().join("target.safetensors");
    let o = selfsup(&[
        "export",
        "--checkpoint",
        ckpt,
        "--out",
        target_file.to_str().unwrap(),
        "--encoder",
        "target",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no momentum target"), "{}", text(&o));
    assert!(!target_file.exists());
}

#[test]
fn energy_subcommand() {
    let ckpt = checkpoint().to_str().unwrap();
    let a = format!("{SAMPLE}/cat/0000.jpg");
    let b = format!("{SAMPLE}/ship/0001.jpg");
    let same = selfsup(&["energy", "--checkpoint", ckpt, &a, &a, "--device", "cpu"]);
    assert!(same.status.success(), "{}", text(&same));
    assert!(text(&same).contains("energy 0.0000"), "{}", text(&same));
    let other = selfsup(&["energy", "--checkpoint", ckpt, &a, &b, "--device", "cpu"]);
    assert!(other.status.success(), "{}", text(&other));
    assert!(!text(&other).contains("energy 0.0000"), "{}", text(&other));
}

#[test]
fn bad_arguments_give_clear_errors() {
    let o = selfsup(&["pretrain", "--data", SAMPLE, "--method", "dino2"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("invalid value 'dino2'") && text(&o).contains("byol"),
        "{}",
        text(&o)
    );
    let o = selfsup(&["pretrain", "--data", SAMPLE, "--lr", "0", "--no-progress"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("lr.base_lr"), "{}", text(&o));
    let o = selfsup(&[
        "pretrain",
        "--data",
        "/nonexistent/images",
        "--no-progress",
        "--epochs",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("/nonexistent/images") && text(&o).contains("does not exist"),
        "{}",
        text(&o)
    );
    let o = selfsup(&[
        "knn",
        "--checkpoint",
        "/nonexistent.ckpt",
        "--train",
        SAMPLE,
        "--val",
        SAMPLE,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent.ckpt"), "{}", text(&o));
    // A checkpoint from another architecture.
    let ckpt = checkpoint().to_str().unwrap();
    let mut args = vec![
        "pretrain",
        "--data",
        SAMPLE,
        "--method",
        "simsiam",
        "--no-progress",
        "--resume",
        ckpt,
    ];
    args.extend(TINY);
    let width = args.len() - 9;
    args[width] = "16"; // --width 16 instead of 8
    let o = selfsup(&args);
    assert!(!o.status.success());
    assert!(text(&o).contains("another architecture"), "{}", text(&o));
    // A backend that was not compiled in is named with the feature that provides it.
    #[cfg(not(all(feature = "cuda", feature = "vulkan")))]
    let not_compiled = |device: &str| {
        let o = selfsup(&[
            "knn",
            "--checkpoint",
            ckpt,
            "--train",
            SAMPLE,
            "--val",
            SAMPLE,
            "--device",
            device,
        ]);
        assert!(!o.status.success());
        let feature = format!("--features {device}");
        assert!(text(&o).contains(&feature), "{}", text(&o));
    };
    #[cfg(not(feature = "cuda"))]
    not_compiled("cuda");
    #[cfg(not(feature = "vulkan"))]
    not_compiled("vulkan");
}

#[test]
fn every_shipped_recipe_is_what_print_config_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    for name in selfsup::method::AnyMethodConfig::NAMES {
        for preset in ["cifar", "imagenet"] {
            let o = selfsup(&[
                "pretrain",
                "--method",
                name,
                "--preset",
                preset,
                "--print-config",
            ]);
            assert!(o.status.success(), "{}", text(&o));
            let file = root.join(format!("{name}-{preset}.toml"));
            let shipped = std::fs::read_to_string(&file).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                shipped,
                "{} differs from --print-config",
                file.display()
            );
            let config: selfsup::train::PretrainConfig = toml::from_str(&shipped).unwrap();
            config.check().unwrap();
            assert!(shipped.contains(&format!("name = \"{name}\"")));
        }
    }
}

#[test]
fn the_new_methods_train_from_their_shipped_recipes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let dir = tempfile::tempdir().unwrap();
    for name in ["moco", "dino", "deepcluster", "lejepa", "mae", "ijepa"] {
        let mut recipe = root.join(format!("{name}-cifar.toml"));
        if name == "deepcluster" {
            // 1,000 clusters do not fit the 20 test images: 4 per head.
            let text = std::fs::read_to_string(&recipe).unwrap();
            let mut config: selfsup::train::PretrainConfig = toml::from_str(&text).unwrap();
            if let selfsup::method::AnyMethodConfig::DeepCluster(c) = &mut config.method {
                c.num_prototypes = vec![4; 3];
            }
            recipe = dir.path().join("deepcluster.toml");
            std::fs::write(&recipe, toml::to_string(&config).unwrap()).unwrap();
        }
        let mut args = vec![
            "pretrain",
            "--data",
            SAMPLE,
            "--config",
            recipe.to_str().unwrap(),
            "--no-progress",
            "--device",
            "cpu",
        ];
        // MAE and I-JEPA keep their recipes' ViT-Tiny (patch masks need patch tokens).
        let masked = matches!(name, "mae" | "ijepa");
        args.extend(if masked { &TINY[4..] } else { &TINY[..] });
        let o = selfsup(&args);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(text(&o).contains("done: 2 steps"), "{name}: {}", text(&o));
    }
}

#[test]
fn a_config_file_plus_method_takes_the_method_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let byol = dir.path().join("byol.toml");
    let o = selfsup(&[
        "pretrain",
        "--method",
        "byol",
        "--preset",
        "cifar",
        "--print-config",
    ]);
    std::fs::write(&byol, &o.stdout).unwrap();
    let o = selfsup(&[
        "pretrain",
        "--config",
        byol.to_str().unwrap(),
        "--method",
        "vicreg",
        "--epochs",
        "7",
        "--print-config",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config: selfsup::train::PretrainConfig =
        toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
    // VICReg's own optimiser (LARS), not the file's SGD; the file's other settings stay.
    assert_eq!(config.method.cli_name(), "vicreg");
    assert_eq!(config.optimizer.kind, selfsup::optim::OptimizerKind::Lars);
    assert_eq!(config.lr.base_lr, 0.3);
    assert_eq!(config.epochs, 7);
    // --crops applies to multi-crop methods only.
    let o = selfsup(&[
        "pretrain",
        "--method",
        "dino",
        "--crops",
        "4",
        "--print-config",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config: selfsup::train::PretrainConfig =
        toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(config.views.num_views(), 6);
    let o = selfsup(&[
        "pretrain",
        "--method",
        "byol",
        "--crops",
        "4",
        "--print-config",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--crops") && text(&o).contains("byol"),
        "{}",
        text(&o)
    );
}

/// `count` random RGB photographs of `width x height` in a flat folder.
fn photos(dir: &Path, count: usize, width: u32, height: u32) {
    for i in 0..count {
        let pixels: Vec<u8> = (0..width * height * 3)
            .map(|p| ((p as usize * 7919 + i * 104_729) % 251) as u8)
            .collect();
        let file = std::fs::File::create(dir.join(format!("photo{i}.png"))).unwrap();
        let mut encoder = png::Encoder::new(file, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&pixels)
            .unwrap();
    }
}

#[test]
fn photographs_get_the_imagenet_recipe_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path(), 4, 240, 230);
    let out = dir.path().join("run");
    let o = selfsup(&[
        "pretrain",
        "--data",
        dir.path().to_str().unwrap(),
        "--backbone",
        "convnet",
        "--width",
        "4",
        "--head-width",
        "0.01",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("preset: imagenet") && t.contains("240x230"),
        "{t}"
    );
    assert!(
        t.contains("done: 2 steps") && t.contains("epoch 1/1"),
        "{t}"
    );
    let ckpt = selfsup::train::Checkpoint::read(out.join("checkpoint.ckpt")).unwrap();
    assert_eq!(ckpt.meta.config.preset, selfsup::method::Preset::Imagenet);
    assert_eq!(ckpt.meta.config.views.view_sizes(), vec![224, 224]);
    // 32-pixel images get the CIFAR recipe.
    let o = selfsup(&["pretrain", "--data", SAMPLE, "--print-config"]);
    assert!(text(&o).contains("preset: cifar"), "{}", text(&o));
}

#[test]
fn evaluation_data_is_checked_before_training() {
    let dir = tempfile::tempdir().unwrap();
    // Unlabelled validation images: refused before any step, nothing written.
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    photos(&flat, 3, 32, 32);
    let out = dir.path().join("run");
    let mut args = vec![
        "pretrain",
        "--data",
        SAMPLE,
        "--val",
        flat.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--device",
        "cpu",
    ];
    args.extend(TINY);
    let o = selfsup(&args);
    assert!(!o.status.success());
    assert!(text(&o).contains("class labels"), "{}", text(&o));
    assert!(!out.join("checkpoint.ckpt").exists());
    assert!(!text(&o).contains("epoch 1/1"), "{}", text(&o));
    // Other classes in --val than in --train: refused, naming both lists.
    let other = dir.path().join("other");
    for class in ["cat", "zebra"] {
        std::fs::create_dir_all(other.join(class)).unwrap();
        photos(&other.join(class), 1, 32, 32);
    }
    let ckpt = checkpoint().to_str().unwrap();
    let o = selfsup(&[
        "knn",
        "--checkpoint",
        ckpt,
        "--train",
        SAMPLE,
        "--val",
        other.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("different classes") && t.contains("zebra") && t.contains("airplane"),
        "{t}"
    );
}

#[test]
fn a_vit_pretrains_and_exports_from_the_command_line_and_refuses_a_width() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = vec![
        "pretrain",
        "--data",
        SAMPLE,
        "--method",
        "lejepa",
        "--backbone",
        "vit-tiny",
        "--no-progress",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    // TINY's run settings without its convnet backbone.
    args.extend(&TINY[4..]);
    let o = selfsup(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("done: 2 steps"), "{}", text(&o));
    let exported = dir.path().join("vit.safetensors");
    let o = selfsup(&[
        "export",
        "--checkpoint",
        out.join("checkpoint.ckpt").to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&exported).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = file.names().into_iter().map(String::from).collect();
    // ViT-Tiny at the cifar preset: 4-pixel patches, 12 blocks, width 192.
    assert!(names.contains(&"encoder.layers.encoder_layer_11.mlp.3.weight".to_string()));
    assert_eq!(
        file.tensor("conv_proj.weight").unwrap().shape(),
        [192, 3, 4, 4]
    );
    assert_eq!(
        file.tensor("encoder.pos_embedding").unwrap().shape(),
        [1, 65, 192]
    );

    let o = selfsup(&[
        "pretrain",
        "--backbone",
        "vit-small",
        "--width",
        "32",
        "--print-config",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--width"), "{}", text(&o));
}
