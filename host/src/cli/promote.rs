//! `edgecascade promote`: the promotion gate (see `edgecascade::gate`).

use super::Global;
use super::cascade::CascadeArgs;
use super::eval::{progress_bar, read_rows};
use edgecascade::gate;
use std::path::PathBuf;
use std::process::ExitCode;

/// Replace a live package with a candidate version, only if the candidate is no worse on a labelled check.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    edgecascade promote --live live/sentiment --candidate target/plugins/sentiment-1.1.0 \\\n    \
    --check models/data/sentiment/test.jsonl --cloud http://127.0.0.1:8080/v1\n\n\
    Both versions answer every row of --check through the same cascade (same flags, answer cache off).\n\
    The candidate is promoted when its cascade accuracy is at least the live version's minus\n\
    --tolerance: its files are written into the live directory, plugin.toml last, so a\n\
    `serve --watch` serving that directory hot-reloads it.\n\n\
    Exit status: 0 promoted (with --dry-run: would be), 1 refused (the live package is untouched), 2 error.")]
pub struct Args {
    /// The live package directory (the one `serve --watch` serves); replaced on promotion.
    #[arg(long, value_name = "DIR")]
    live: PathBuf,

    /// The candidate package directory: the same plugin under another version.
    #[arg(long, value_name = "DIR")]
    candidate: PathBuf,

    /// The labelled JSONL check set: {"text": ..., "label": ...} per line, as for eval.
    #[arg(long, value_name = "FILE")]
    check: PathBuf,

    /// Use only the first N rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,

    /// Cascade accuracy the candidate may lose, as a fraction (0.005 = half a point); negative demands a gain.
    #[arg(long, value_name = "X", default_value_t = 0.0, allow_negative_numbers = true)]
    tolerance: f64,

    /// Evaluate and decide, but leave the live package as it is.
    #[arg(long)]
    dry_run: bool,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    cascade: CascadeArgs,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.cascade.cloud.is_some(), "promote needs --cloud URL: the check runs through the cascade");
    anyhow::ensure!((-1.0..=1.0).contains(&args.tolerance), "--tolerance {} is outside -1..1", args.tolerance);
    let rows = read_rows(&args.check, args.limit)?;
    anyhow::ensure!(!rows.is_empty(), "{} has no rows", args.check.display());
    let runtime = global.runtime()?;
    let live_package = runtime.verify(&args.live)?;
    let candidate_package = runtime.verify(&args.candidate)?;
    // Before the slow part: a wrong pair is refused without evaluating anything.
    gate::check_pair(live_package.manifest(), candidate_package.manifest())?;
    let mut cascade = args.cascade.clone();
    cascade.cache_entries = 0;
    let cloud = cascade.client()?;
    let metrics = edgecascade::Metrics::default();
    let live = cascade.router(super::load_with_progress(&runtime, live_package)?, cloud.clone(), metrics.clone())?;
    let candidate = cascade.router(super::load_with_progress(&runtime, candidate_package.clone())?, cloud, metrics)?;
    let bar = progress_bar(2 * rows.len());
    let check = gate::Check { rows: &rows, rule: gate::Rule::NoLessAccurate { tolerance: args.tolerance } };
    let report = gate::evaluate(&live, &candidate, check, || bar.inc(1))?;
    bar.finish_and_clear();
    let promoted = !args.dry_run && gate::apply(&report, &candidate_package, &args.live)?;

    let (name, from, to, dir) = (&report.plugin, &report.live.version, &report.candidate.version, args.live.display());
    if args.json {
        let out = serde_json::json!({"report": report, "promoted": promoted, "dry_run": args.dry_run});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{name}: live {from} against candidate {to} on {}", args.check.display());
        print!("{}", report.table());
    }
    match report.verdict {
        gate::Verdict::Promote if promoted => {
            eprintln!("promoted: {dir} now holds {name} {to}; `serve --watch` on it swaps to {to} at its next look");
            Ok(ExitCode::SUCCESS)
        }
        gate::Verdict::Promote => {
            eprintln!("would promote {name} {to} (dry run): {dir} is unchanged");
            Ok(ExitCode::SUCCESS)
        }
        gate::Verdict::Refuse { shortfall } => {
            eprintln!(
                "refused: {name} {to}'s cascade accuracy is {:.1} points below {from}'s (tolerance {:.1}); \
                 {dir} is unchanged and {from} keeps serving",
                shortfall * 100.0,
                args.tolerance * 100.0
            );
            Ok(ExitCode::from(1))
        }
        // Only the loop's rule gives these; the message still says why and that nothing changed.
        verdict => {
            eprintln!("{}; {dir} is unchanged and {from} keeps serving", verdict.describe());
            Ok(ExitCode::from(1))
        }
    }
}
