//! `edgecascade distill`: the distillation loop (see `edgecascade::distill`).

use super::Global;
use super::cascade::CascadeArgs;
use super::eval::read_rows;
use anyhow::Context;
use edgecascade::distill::{self, CommandTrainer, Loop, LoopConfig, LoopData, LoopReport, Round};
use edgecascade::eval::{Row, Target};
use edgecascade::{CascadeConfig, Input};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run the distillation loop: serve traffic, learn from the large model's answers, gate, promote; in rounds.
#[derive(clap::Args)]
#[command(after_help = "Example (a cold start from 350 gold tweets, the teacher served by `edgecascade serve`):\n  \
    edgecascade distill --plugin live/sentiment --cloud http://127.0.0.1:8080/v1 --cloud-model sentiment-teacher \\\n    \
    --cold-start --seed models/data/sentiment/loop/seed.jsonl --check models/data/sentiment/loop/check.jsonl \\\n    \
    --stream models/data/sentiment/loop/stream.jsonl --report models/data/sentiment/test.jsonl \\\n    \
    --trainer \"python3 models/pipeline/distill.py --task sentiment\" --rounds 4 --svg loop.svg\n\n\
    Each round serves the next 1/ROUNDS of --stream through the cascade with the escalation log on,\n\
    runs the trainer on --seed plus every record logged so far, packs the result as the next version\n\
    (signed with --key), calibrates its threshold on --check, compares it with the live version in\n\
    shadow and through the gate on --check (by default it must be no less accurate, or serve more\n\
    locally and still meet the calibration target), and promotes it into --plugin (plugin.toml last, so\n\
    a `serve --watch` on that directory hot-reloads it). --report is only measured.\n\n\
    Training runs where this command runs. The trainer is any program that takes\n\
    `--seed F [--log F]... --out DIR --version V` and prints {\"model\": PATH} last; `--check` must\n\
    exit 0 when it can run. The project's trainer needs Python 3 with numpy, scipy, onnx and\n\
    onnxruntime (bash models/setup.sh). Exit status: 0 done, 2 error.")]
pub struct Args {
    /// The live package directory: served, and replaced by each promoted version.
    #[arg(long, value_name = "DIR")]
    plugin: PathBuf,

    /// The traffic, JSONL {"text"} (a "label", if present, is only used to report served accuracy).
    #[arg(long, value_name = "FILE")]
    stream: PathBuf,

    /// Labelled JSONL rows that are only measured, never used to decide (an untouched test split).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Rounds; the stream is served in this many equal slices.
    #[arg(long, value_name = "N", default_value_t = 4)]
    rounds: usize,

    /// Write the round-by-round curve here as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,

    /// Print the report as JSON after the table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub(super) learn: LoopArgs,

    #[command(flatten)]
    cascade: CascadeArgs,
}

/// How the loop learns: the data it starts from, the trainer, calibration, the gate and signing.
/// Shared by `distill` and `fleet train`.
#[derive(clap::Args, Clone)]
pub struct LoopArgs {
    /// The gold training seed, JSONL {"text", "label"}: the few hundred examples the operator has.
    #[arg(long, value_name = "FILE")]
    pub(super) seed: PathBuf,

    /// Gold JSONL rows for the gate and the threshold, never trained on (the rest of the gold examples).
    #[arg(long, value_name = "FILE")]
    pub(super) check: PathBuf,

    /// Train the first model from --seed alone and install it before round 1 (no small model yet).
    #[arg(long)]
    pub(super) cold_start: bool,

    /// The trainer's command line; the loop appends --seed, --log, --out and --version.
    #[arg(long, value_name = "COMMAND", default_value = "python3 models/pipeline/distill.py")]
    pub(super) trainer: String,

    /// Where logs, models and candidate packages go [default: a `distill` directory beside --plugin].
    #[arg(long, value_name = "DIR")]
    pub(super) work: Option<PathBuf>,

    /// Each candidate's threshold: testing from the top down, the lowest at which the cascade keeps
    /// this fraction of the large model's accuracy on --check...
    #[arg(long, value_name = "X", default_value_t = 0.99)]
    pub(super) calibrate_to: f64,

    /// ...in all but this share of bootstrap resamples of --check (0: on --check itself, which is
    /// noisy for a few hundred rows; see models/LOOP.md).
    #[arg(long, value_name = "Q", default_value_t = 0.1)]
    pub(super) calibration_quantile: f64,

    /// Gate on accuracy instead of cost: promote a candidate whose cascade accuracy on --check is at
    /// most X below the live one's, whatever it serves locally [default: promote a candidate that is
    /// no less accurate, or that serves more locally and still meets the calibration target].
    #[arg(long, value_name = "X")]
    pub(super) no_less_accurate: Option<f64>,

    /// Sign every candidate with this ed25519 key (from `edgecascade keygen`).
    #[arg(long, value_name = "FILE")]
    pub(super) key: Option<PathBuf>,
}

impl LoopArgs {
    /// The trainer, checked: a missing Python package should not surface after a round of serving.
    pub fn trainer(&self) -> anyhow::Result<CommandTrainer> {
        let argv: Vec<String> = self.trainer.split_whitespace().map(str::to_string).collect();
        anyhow::ensure!(!argv.is_empty(), "--trainer is empty");
        let trainer = CommandTrainer::new(argv);
        trainer.check().context("the trainer cannot run here (for the project's trainer: bash models/setup.sh)")?;
        Ok(trainer)
    }

    /// The loop's configuration for `rounds` rounds.
    pub fn config(&self, rounds: usize, audit_rate: Option<f64>) -> anyhow::Result<LoopConfig> {
        anyhow::ensure!(
            (0.0..=1.5).contains(&self.calibrate_to),
            "--calibrate-to {} is outside 0..1.5",
            self.calibrate_to
        );
        anyhow::ensure!(
            (0.0..=0.5).contains(&self.calibration_quantile),
            "--calibration-quantile {} is outside 0..0.5",
            self.calibration_quantile
        );
        Ok(LoopConfig {
            rounds,
            cold_start: self.cold_start,
            calibration: if self.calibration_quantile > 0.0 {
                Target::AccuracyOfCloudLowerBound { fraction: self.calibrate_to, quantile: self.calibration_quantile }
            } else {
                Target::AccuracyOfCloud(self.calibrate_to)
            },
            gate: match self.no_less_accurate {
                Some(tolerance) => distill::LoopGate::NoLessAccurate { tolerance },
                None => distill::LoopGate::BetterOrCheaper,
            },
            audit_rate,
            signing_key: self.key.as_deref().map(edgecascade::plugin::signing_key).transpose()?,
            ..LoopConfig::default()
        })
    }

    /// The check rows, and a check that the seed has examples.
    pub fn gold(&self) -> anyhow::Result<Vec<Row>> {
        anyhow::ensure!(read_rows(&self.seed, None)?.len() > 1, "{} needs gold examples", self.seed.display());
        let check = read_rows(&self.check, None)?;
        anyhow::ensure!(!check.is_empty(), "{} has no rows", self.check.display());
        Ok(check)
    }
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    let cloud = args.cascade.client()?.context("distill needs --cloud URL: the large model labels the escalations")?;
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let learn = &args.learn;
    let config = learn.config(args.rounds, args.cascade.audit_rate)?;
    let trainer = learn.trainer()?;
    let data = LoopData {
        seed: learn.seed.clone(),
        check: learn.gold()?,
        stream: read_stream(&args.stream)?,
        report: args.report.as_ref().map(|p| read_rows(p, None)).transpose()?,
    };
    anyhow::ensure!(data.stream.len() >= args.rounds, "{} has fewer rows than rounds", args.stream.display());
    let work = learn.work.clone().unwrap_or_else(|| sibling(&args.plugin, "distill"));
    let runtime = global.runtime()?;
    // Compile once up front, with the progress line, so rounds only load from the cache.
    let first = super::load_with_progress(&runtime, runtime.verify(&args.plugin)?)?;
    args.cascade.config(&first)?;
    // The flags are valid (checked just above), so a plugin's config cannot fail from here on.
    let settings = |plugin: &edgecascade::Plugin| {
        args.cascade.config(plugin).unwrap_or_else(|_| CascadeConfig::for_plugin(plugin))
    };
    let the_loop = Loop::new(&runtime, cloud, settings, &trainer, &args.plugin, &work, config);
    let split = if data.report.is_some() { "test" } else { "check" };
    eprintln!(
        "distill: {} rounds over {} stream rows; seed {}, check {} rows; measured on the {split} split; work in {}",
        args.rounds,
        data.stream.len(),
        learn.seed.display(),
        data.check.len(),
        work.display()
    );
    println!("{}", header(split));
    let report = the_loop.run(&data, |round| {
        println!("{}", line(round));
        if let (Some(candidate), Some(verdict)) = (&round.candidate, round.verdict)
            && verdict != edgecascade::gate::Verdict::Promote
        {
            eprintln!("round {}: candidate {candidate} {}", round.round, verdict.describe());
        }
    })?;
    println!("{}", footer(&report));
    if let Some(path) = &args.svg {
        let title = format!("{}: the distillation loop", report.plugin);
        std::fs::write(path, distill::svg(&report, &title)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Stream rows: like eval's rows, but the label may be missing (traffic is unlabelled).
pub(super) fn read_stream(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let label = value.get("label").and_then(|l| l.as_str()).unwrap_or_default().to_string();
        if let Some(obj) = value.as_object_mut() {
            obj.remove("label");
        }
        let input = match value.get("text").and_then(|t| t.as_str()) {
            Some(t) => Input::text(t),
            None => Input::json(&value),
        };
        rows.push(Row { input, label });
    }
    Ok(rows)
}

/// `dir`'s sibling named `<dir name>-<suffix>`.
pub(super) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
    dir.with_file_name(format!("{name}-{suffix}"))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn header(split: &str) -> String {
    let groups = format!(
        "{:>34} │ after the round: the version in service, on the {split} split",
        "serving the stream (live version)"
    );
    let columns = format!(
        "{:>5} {:>7} {:>10} {:>9} │ {:<14} {:>5} {:>10} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>7}",
        "round",
        "served",
        "calls/1k",
        "local",
        "version",
        "thr",
        "calls/1k",
        "cascade",
        "vs large",
        "small",
        "local@99%",
        "bytes",
        "gate",
        "labels",
    );
    format!("{groups}\n{columns}")
}

fn line(r: &Round) -> String {
    let (served, calls, local) = match &r.served {
        Some(s) => {
            let n = s.requests.max(1) as f64;
            (s.requests.to_string(), format!("{:.0}", s.cloud_calls as f64 * 1000.0 / n), pct(s.local as f64 / n))
        }
        None => ("-".into(), "-".into(), "-".into()),
    };
    let m = r.report.as_ref().unwrap_or(&r.check);
    let s = &m.summary;
    let gate = match r.verdict {
        None => "-".to_string(),
        Some(edgecascade::gate::Verdict::Promote) => "promoted".into(),
        Some(_) => "refused".into(),
    };
    format!(
        "{:>5} {:>7} {:>10} {:>9} │ {:<14} {:>5.2} {:>10.0} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>7}",
        r.round,
        served,
        calls,
        local,
        r.version,
        r.threshold,
        (1.0 - s.local_share) * 1000.0,
        pct(s.cascade_accuracy),
        if s.cloud_accuracy > 0.0 { pct(s.cascade_accuracy / s.cloud_accuracy) } else { "-".into() },
        pct(s.local_accuracy),
        m.share_at_target.map(pct).unwrap_or_else(|| "none".into()),
        r.model_bytes,
        gate,
        r.cloud_labels,
    )
}

fn footer(report: &LoopReport) -> String {
    let large = report.rounds.first().map(|r| r.report.as_ref().unwrap_or(&r.check).summary.cloud_accuracy);
    format!(
        "large model accuracy {}; `labels` = cloud labels paid so far (escalations, audits, the check set once); \
         {} more calls measured the report set",
        large.map(pct).unwrap_or_default(),
        report.report_calls
    )
}
