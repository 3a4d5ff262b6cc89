//! `selfsup report`: the pictures of one or more runs.

use std::path::PathBuf;

use selfsup::Result;
use selfsup::data::open_dataset;
use selfsup::prelude::Device;
use selfsup::report::{ReportData, write_report};

/// The arguments of `selfsup report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run folders (written by `selfsup pretrain --out`); several are overlaid.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Training images: the retrieval sheet's neighbours (with --val) and its queries
    /// (without).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Labelled validation images: the retrieval sheet's queries and the PCA scatter.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Where to write the PNG files (default: the first run's folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `selfsup report`.
pub fn run(args: &ReportArgs, device: &Device) -> Result<()> {
    let data = match &args.data {
        Some(train) => {
            let bank = open_dataset(train, true)?;
            let queries = match &args.val {
                Some(val) => open_dataset(val, true)?,
                None => bank.clone(),
            };
            Some(ReportData { bank, queries })
        }
        None => None,
    };
    let out = args.out.clone().unwrap_or_else(|| args.runs[0].clone());
    for file in write_report(&args.runs, data.as_ref(), &out, device)? {
        println!("wrote {}", file.display());
    }
    Ok(())
}
