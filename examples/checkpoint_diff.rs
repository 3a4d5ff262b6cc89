//! Whether two checkpoints hold the same training state, bit for bit: every tensor of the
//! model (weights, batch-norm running statistics, the method's state) by path, the step and
//! epoch counts, and the optimiser's state, which is compared by continuing both runs for one
//! epoch on the same data and comparing every loss and every tensor after it. Exits with 1 and
//! names the first difference otherwise. `benches/kill_resume.sh` uses it.
//!
//! `cargo run --release --example checkpoint_diff -- --data IMAGES A.ckpt B.ckpt`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use clap::Parser;
use selfsup::data::open_dataset;
use selfsup::train::{Control, PretrainOptions, load_checkpoint, pretrain_with};

#[derive(Parser)]
struct Args {
    /// The training images of both runs.
    #[arg(long)]
    data: PathBuf,
    /// The checkpoints to compare.
    a: PathBuf,
    b: PathBuf,
}

/// Tensors by path, their values as raw f32 bits.
type Tensors = Vec<(String, Vec<u32>)>;

/// Every float tensor of a module by path, as raw f32 bits.
fn tensors<M: Module>(model: &M) -> Tensors {
    struct Paths(Vec<String>, Vec<(String, Vec<u32>)>);
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values: Vec<f32> = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .unwrap_or_default();
            self.1.push((
                self.0.join("."),
                values.iter().map(|v| v.to_bits()).collect(),
            ));
        }
    }
    let mut paths = Paths(Vec::new(), Vec::new());
    model.visit(&mut paths);
    paths.1
}

/// The first difference between two lists of tensors, if any.
fn first_difference(a: &Tensors, b: &Tensors) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} tensors against {}", a.len(), b.len()));
    }
    a.iter().zip(b).find_map(|((pa, va), (pb, vb))| {
        let differing = va.iter().zip(vb).filter(|(x, y)| x != y).count();
        (pa != pb || va.len() != vb.len() || differing > 0)
            .then(|| format!("{pa}: {differing} of {} values differ", va.len()))
    })
}

/// Continues the run of `checkpoint` for one epoch: its losses and final tensors.
fn one_more_epoch(checkpoint: &PathBuf, data: &PathBuf) -> selfsup::Result<(Vec<u64>, Tensors)> {
    let (_, meta) = load_checkpoint(checkpoint, &Device::flex())?;
    let mut config = meta.config;
    config.epochs = meta.epochs_completed + 1;
    config.output_dir = None;
    config.progress = false;
    let losses = Arc::new(Mutex::new(Vec::new()));
    let sink = losses.clone();
    let options = PretrainOptions {
        on_step: Some(Box::new(move |m| {
            sink.lock().unwrap().push(m.loss.to_bits());
            Control::Continue
        })),
        resume: Some(checkpoint.clone()),
        ..Default::default()
    };
    let trained = pretrain_with(&config, open_dataset(data, true)?, &Device::flex(), options)?;
    let losses = losses.lock().unwrap().clone();
    Ok((losses, tensors(&trained.model)))
}

fn compare(args: &Args) -> selfsup::Result<Option<String>> {
    let (model_a, meta_a) = load_checkpoint(&args.a, &Device::flex())?;
    let (model_b, meta_b) = load_checkpoint(&args.b, &Device::flex())?;
    if (meta_a.epochs_completed, meta_a.step) != (meta_b.epochs_completed, meta_b.step) {
        return Ok(Some(format!(
            "epochs/steps: {}/{} against {}/{}",
            meta_a.epochs_completed, meta_a.step, meta_b.epochs_completed, meta_b.step
        )));
    }
    if let Some(d) = first_difference(&tensors(&model_a), &tensors(&model_b)) {
        return Ok(Some(format!("model: {d}")));
    }
    let (losses_a, after_a) = one_more_epoch(&args.a, &args.data)?;
    let (losses_b, after_b) = one_more_epoch(&args.b, &args.data)?;
    if losses_a != losses_b {
        return Ok(Some(
            "the next epoch's losses differ (optimiser state)".into(),
        ));
    }
    Ok(first_difference(&after_a, &after_b).map(|d| format!("after one more epoch: {d}")))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match compare(&args) {
        Ok(None) => {
            println!("identical: model, counters and optimiser state");
            ExitCode::SUCCESS
        }
        Ok(Some(difference)) => {
            println!("different: {difference}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
