//! `edgecascade pack`: make a package from a manifest template.

use std::path::PathBuf;
use std::process::ExitCode;

/// Make a plugin package: copy the files a manifest names and fill in their sha256.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgecascade pack guest/packages/news-topic/plugin.toml \\\n    \
                        --search guest/target/wasm32-wasip1/release --search models/onnx --out target/plugins/news-topic")]
pub struct Args {
    /// The manifest template (a plugin.toml whose sha256 fields may be empty).
    template: PathBuf,

    /// Where to write the package.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// More directories to look for the files in, after the template's own (repeatable).
    #[arg(long, value_name = "DIR")]
    search: Vec<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let manifest = edgecascade::plugin::pack(&args.template, &args.search, &args.out)?;
    eprintln!("packed {} {} into {}", manifest.plugin.name, manifest.plugin.version, args.out.display());
    Ok(ExitCode::SUCCESS)
}
