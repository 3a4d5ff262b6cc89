//! The `selfsup` command line: pretrain, evaluate (kNN, linear probe, fine-tune), export, and
//! score image pairs with a trained encoder.

mod evaluate;
mod pretrain;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use selfsup::Result;
use selfsup::device::{DeviceChoice, select_device, select_device_at};
use selfsup::distributed::{self, World};

#[derive(Parser)]
#[command(
    name = "selfsup",
    version,
    about = "Self-supervised pretraining of image encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Device: auto (CUDA or a real GPU through wgpu when compiled in, else the CPU), cpu,
    /// wgpu, vulkan (wgpu on Vulkan with the SPIR-V compiler) or cuda.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain an encoder on unlabelled images (a folder, CIFAR binaries, or a .pack file).
    Pretrain(Box<pretrain::PretrainArgs>),
    /// kNN top-1 of a checkpoint's encoder (bank: --train, queries: --val).
    Knn(evaluate::KnnArgs),
    /// Linear probe on frozen features: top-1 and confusion matrix on --val.
    Probe(evaluate::ProbeArgs),
    /// Fine-tune the whole encoder with a linear head: top-1 and confusion matrix on --val.
    Finetune(evaluate::FinetuneArgs),
    /// Export the backbone (safetensors with torchvision names, or burn's format).
    Export(evaluate::ExportArgs),
    /// How compatible two images are under a trained encoder: the cosine energy
    /// 1 - cos(z_a, z_b) of their embeddings (low: views of the same thing).
    Energy(evaluate::EnergyArgs),
    /// Pictures of runs: training curves (several runs overlaid), and with --data a retrieval
    /// sheet and a PCA scatter of the first run's encoder.
    Report(report::ReportArgs),
}

fn run(cli: Cli) -> Result<()> {
    let choice = cli.device.parse::<DeviceChoice>()?;
    if let Command::Pretrain(args) = &cli.command
        && args.print_config
    {
        return pretrain::print_config(args);
    }
    if let Command::Pretrain(args) = &cli.command {
        return pretrain_on_world(args, choice);
    }
    let device = select_device(choice)?;
    match cli.command {
        Command::Pretrain(args) => pretrain::run(&args, &device, World::single()),
        Command::Knn(args) => evaluate::knn(&args, &device),
        Command::Probe(args) => evaluate::probe(&args, &device),
        Command::Finetune(args) => evaluate::finetune(&args, &device),
        Command::Export(args) => evaluate::export(&args, &device),
        Command::Energy(args) => evaluate::energy(&args, &device),
        Command::Report(args) => report::run(&args, &device),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            selfsup::distributed::eprint_line(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `selfsup pretrain` on every rank of the world it was launched into (`mpirun`, `srun`), each
/// on the GPU of its local rank. An error on any rank ends every rank: the others would wait
/// for it in a collective forever.
fn pretrain_on_world(args: &pretrain::PretrainArgs, choice: DeviceChoice) -> Result<()> {
    let world = World::init()?;
    let outcome =
        select_device_at(choice, world.local_rank()).and_then(|d| pretrain::run(args, &d, world));
    match outcome {
        Err(e) if world.is_distributed() => world.abort(&e),
        outcome => {
            distributed::finalize();
            outcome
        }
    }
}
