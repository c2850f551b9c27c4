//! `edgecascade eval` and `edgecascade calibrate`: replay a labelled set through the cascade.

use super::Global;
use super::cascade::CascadeArgs;
use anyhow::Context;
use edgecascade::eval::{self, Observation, Row, Summary, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Replay a labelled JSONL set: accuracy of local-only, cloud-only and the cascade, and what it costs.
/// Without --cloud: the local model alone (accuracy, calibration, what each threshold keeps).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    edgecascade eval --plugin target/plugins/news-topic --cloud http://127.0.0.1:8080/v1 \\\n    \
    --data models/data/news/test.jsonl --sweep --svg news-cascade.svg\n  \
    edgecascade eval --plugin target/plugins/news-topic --data models/data/news/test.jsonl\n\n\
    Each line of --data is {\"text\": ..., \"label\": ...} (or a JSON input object with a \"label\").\n\
    Every row is answered once locally and once by the cloud (the answer cache is off);\n\
    the cascade is the router's own decision on those answers. Without --cloud, the report\n\
    is the local model's: accuracy, expected calibration error (ECE, 10 bins), and at each\n\
    threshold the share kept locally and the accuracy on what is kept.")]
pub struct EvalArgs {
    #[command(flatten)]
    common: Common,

    /// Also report every threshold from 0 to 1 in steps of 0.05.
    #[arg(long)]
    sweep: bool,

    /// Write the sweep's curve (accuracy against share served locally) as an SVG plot (needs --cloud).
    #[arg(long, value_name = "FILE", requires = "sweep")]
    svg: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,

    /// Exit with status 1 when the accuracy is below this fraction: the local model's without
    /// --cloud, the cascade's with it. For a plugin's own tests (`tests/cases.jsonl`).
    #[arg(long, value_name = "FRACTION")]
    min_accuracy: Option<f64>,
}

/// Exit status 1, and why, when `accuracy` of `what` is below `--min-accuracy`.
fn check_min_accuracy(args: &EvalArgs, what: &str, accuracy: f64) -> ExitCode {
    match args.min_accuracy {
        Some(min) if accuracy < min => {
            eprintln!("{what} accuracy {:.1}% is below --min-accuracy {:.1}%", accuracy * 100.0, min * 100.0);
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Pick the threshold that meets a target and write it into the plugin's manifest.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    edgecascade calibrate --plugin target/plugins/sentiment --cloud http://127.0.0.1:8080/v1 \\\n    \
    --data models/data/sentiment/val.jsonl --target-accuracy 0.99\n  \
    edgecascade calibrate ... --max-escalation 0.2 --dry-run\n\n\
    Calibrate on a validation split, then check the result with eval on the test split.")]
pub struct CalibrateArgs {
    #[command(flatten)]
    common: Common,

    /// Cascade accuracy of at least this fraction of cloud-only accuracy (0.99 = 99 %).
    #[arg(
        long,
        value_name = "FRACTION",
        conflicts_with = "max_escalation",
        required_unless_present = "max_escalation"
    )]
    target_accuracy: Option<f64>,

    /// At most this share of requests escalated (0.2 = 20 %).
    #[arg(long, value_name = "SHARE")]
    max_escalation: Option<f64>,

    /// Report the threshold without writing it into plugin.toml.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct Common {
    /// The (small) plugin package to evaluate.
    #[arg(long, value_name = "DIR")]
    plugin: PathBuf,

    /// The labelled JSONL set.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,

    /// Use only the first N rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,

    /// Cloud calls in flight at once. Local answers are always taken one at a time, so their
    /// latencies are the plugin's own; each row's answers are the same at any concurrency.
    #[arg(long, value_name = "N", default_value_t = eval::DEFAULT_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,

    #[command(flatten)]
    cascade: CascadeArgs,
}

fn observe(global: &Global, common: &Common) -> anyhow::Result<(Vec<Observation>, f32, String)> {
    let rows = read_rows(&common.data, common.limit)?;
    let runtime = global.runtime()?;
    let plugin = super::load_with_progress(&runtime, runtime.verify(&common.plugin)?)?;
    let name = plugin.name().to_string();
    let mut cascade = common.cascade.clone();
    cascade.cache_entries = 0;
    let router = cascade.router(plugin, cascade.client()?, edgecascade::Metrics::default())?;
    let threshold = router.config().threshold;
    let bar = progress_bar(rows.len());
    let obs = eval::observe(&router, &rows, usize::from(common.concurrency), || bar.inc(1));
    bar.finish_and_clear();
    Ok((obs, threshold, name))
}

/// The first `limit` rows of a labelled JSONL set; a bad line is an error naming it.
pub(super) fn read_rows(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(limit.unwrap_or(usize::MAX))
        .map(|(i, l)| Row::from_json_line(l).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

/// A progress bar over `rows` evaluated rows.
pub(super) fn progress_bar(rows: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(rows as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    bar
}

fn table(s: &Summary) -> String {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let mut out =
        format!("{:<12} {:>9} {:>15} {:>12} {:>9}\n", "", "accuracy", "served locally", "cloud calls", "tokens");
    out += &format!("{:<12} {:>9} {:>15} {:>12} {:>9}\n", "local only", pct(s.local_accuracy), "100.0%", 0, 0);
    out += &format!(
        "{:<12} {:>9} {:>15} {:>12} {:>9}\n",
        "cloud only",
        pct(s.cloud_accuracy),
        "0.0%",
        s.cloud_only_calls,
        s.cloud_only_tokens
    );
    out += &format!(
        "{:<12} {:>9} {:>15} {:>12} {:>9}\n",
        "cascade",
        pct(s.cascade_accuracy),
        pct(s.local_share),
        s.cloud_calls,
        s.cascade_tokens
    );
    out += &format!(
        "PGR {:.2}; latency p50/p95: local {:.2}/{:.2} ms, escalated {:.1}/{:.1} ms\n",
        s.pgr, s.local_latency.p50, s.local_latency.p95, s.escalated_latency.p50, s.escalated_latency.p95
    );
    out
}

pub fn run_eval(global: &Global, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    if args.common.cascade.cloud.is_none() {
        anyhow::ensure!(args.svg.is_none(), "--svg plots the cascade against the cloud: it needs --cloud URL");
        return run_local_eval(global, args);
    }
    let (obs, threshold, name) = observe(global, &args.common)?;
    let summary = eval::summarize(&obs, threshold);
    let curve = args.sweep.then(|| eval::sweep(&obs));
    if let (Some(curve), Some(path)) = (&curve, &args.svg) {
        let title = format!("{name}: cascade accuracy vs share served locally ({} rows)", obs.len());
        std::fs::write(path, eval::svg(curve, &title)).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"plugin": name, "summary": summary, "sweep": curve}))?
        );
        return Ok(check_min_accuracy(args, "cascade", summary.cascade_accuracy));
    }
    println!("{name} on {} ({} rows), threshold {threshold:.2}", args.common.data.display(), obs.len());
    print!("{}", table(&summary));
    if let Some(curve) = &curve {
        println!("\n{:>9} {:>9} {:>15} {:>12}", "threshold", "accuracy", "served locally", "cloud calls");
        for s in curve {
            println!(
                "{:>9.2} {:>8.1}% {:>14.1}% {:>12}",
                s.threshold,
                s.cascade_accuracy * 100.0,
                s.local_share * 100.0,
                s.cloud_calls
            );
        }
    }
    if let Some(path) = &args.svg {
        eprintln!("wrote {}", path.display());
    }
    Ok(check_min_accuracy(args, "cascade", summary.cascade_accuracy))
}

/// `eval` without a cloud: what the local model knows, and how well it knows it.
fn run_local_eval(global: &Global, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let (obs, threshold, name) = observe(global, &args.common)?;
    let report = eval::local_report(&obs);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plugin": name, "local": report}))?);
        return Ok(check_min_accuracy(args, "local", report.accuracy));
    }
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    println!("{name} on {} ({} rows), local only (no --cloud)", args.common.data.display(), report.rows);
    println!(
        "accuracy {}; calibration error (ECE, {} bins) {:.3}; manifest threshold {threshold:.2}",
        pct(report.accuracy),
        eval::CALIBRATION_BINS,
        report.ece
    );
    println!("\n{:>9} {:>13} {:>17}", "threshold", "kept locally", "accuracy on kept");
    for k in &report.sweep {
        println!("{:>9.2} {:>13} {:>17}", k.threshold, pct(k.share), k.accuracy.map_or("-".into(), pct));
    }
    Ok(check_min_accuracy(args, "local", report.accuracy))
}

pub fn run_calibrate(global: &Global, args: &CalibrateArgs) -> anyhow::Result<ExitCode> {
    let target = match (args.target_accuracy, args.max_escalation) {
        (Some(a), None) => Target::AccuracyOfCloud(a),
        (None, Some(e)) => Target::MaxEscalation(e),
        _ => anyhow::bail!("give one of --target-accuracy or --max-escalation"),
    };
    anyhow::ensure!(
        args.common.cascade.cloud.is_some(),
        "calibrate needs --cloud URL: the cascade's accuracy needs the large model's answers"
    );
    let (obs, _, name) = observe(global, &args.common)?;
    let Some(best) = eval::calibrate(&obs, target) else {
        eprintln!("no threshold meets {target:?} on this data");
        return Ok(ExitCode::from(1));
    };
    println!("{name}: threshold {:.4} meets {target:?} on {} rows", best.threshold, obs.len());
    print!("{}", table(&best));
    if !args.dry_run {
        write_threshold(&args.common.plugin, best.threshold)?;
        println!(
            "wrote policy.threshold = {:.4} into {}",
            best.threshold,
            args.common.plugin.join("plugin.toml").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets the manifest's `policy.threshold`, keeping the rest as written (comments and hashes included).
fn write_threshold(dir: &Path, threshold: f32) -> anyhow::Result<()> {
    let path = dir.join(edgecascade::plugin::manifest::MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("parsing {}", path.display()))?;
    // Four decimals, as printed: an f32 widened to f64 would write 0.7599999904632568.
    let value: f64 = format!("{threshold:.4}").parse().expect("a formatted float parses");
    doc["policy"]["threshold"] = toml_edit::value(value);
    let text = doc.to_string();
    edgecascade::Manifest::parse(&text, &path)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
