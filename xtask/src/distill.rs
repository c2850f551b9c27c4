//! `cargo xtask distill`: one scenario of the distillation loop (`edgecascade distill`) against a
//! teacher tier whose head never saw the texts it labels.

use super::{Project, Tier, copy_dir, step};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// `cargo xtask distill` flags.
#[derive(clap::Args)]
pub struct Args {
    /// The task: sentiment or news.
    #[arg(long, default_value = "sentiment")]
    task: String,
    /// cold (from 300 gold examples), drift (a topic the seed never saw arrives; sentiment), or
    /// warm (the shipped model).
    #[arg(long, default_value = "cold")]
    scenario: String,
    /// Rounds of serve, retrain, shadow, gate, promote.
    #[arg(long, value_name = "N", default_value_t = 4)]
    rounds: usize,
    /// Also send this share of confident local answers to the teacher (0 to 1).
    #[arg(long, value_name = "X")]
    audit_rate: Option<f64>,
    /// Hard labels only (the ablation).
    #[arg(long)]
    hard: bool,
}

/// One run of the distillation loop.
pub(crate) struct LoopRun<'a> {
    pub task: &'a str,
    pub scenario: &'a str,
    pub rounds: usize,
    /// Only the first N rows of the stream (the demo's short run).
    pub stream_rows: Option<usize>,
    /// Only the first N rows of the report split.
    pub report_rows: Option<usize>,
    /// Hard labels only (the ablation).
    pub hard: bool,
}

impl Project {
    /// The distillation loop, one scenario (`edgecascade distill` against a teacher tier).
    pub(crate) fn distill(&self, args: &Args) -> Result<()> {
        let mut extra: Vec<String> = Vec::new();
        if let Some(rate) = args.audit_rate {
            extra.extend(["--audit-rate".into(), rate.to_string()]);
        }
        let run = LoopRun {
            task: &args.task,
            scenario: &args.scenario,
            rounds: args.rounds,
            stream_rows: None,
            report_rows: None,
            hard: args.hard,
        };
        self.loop_scenario(&run, &extra)
    }

    /// Runs `edgecascade distill` for one scenario: a teacher tier (`<plugin>-teacher`, its head
    /// trained on half A of the train split only), a copy of the shipped package as the live
    /// directory, and the scenario's loop splits (models/data/<task>/loop, see its README).
    pub(crate) fn loop_scenario(&self, run: &LoopRun<'_>, extra: &[String]) -> Result<()> {
        let plugin = match run.task {
            "sentiment" => "sentiment",
            "news" => "news-topic",
            other => bail!("--task {other}: use sentiment or news"),
        };
        let data = self.root.join("models/data").join(run.task);
        let loop_data = data.join("loop");
        // seed, check, stream, report, cold start?
        let (seed, check, stream, report, cold) = match run.scenario {
            "cold" => ("loop/seed.jsonl", "loop/check.jsonl", "loop/stream.jsonl", "test.jsonl", true),
            "drift" if run.task == "sentiment" => {
                ("loop/drift-seed.jsonl", "loop/drift-check.jsonl", "loop/drift-stream.jsonl", "test.jsonl", true)
            }
            // The shipped model, trained on the whole train split; the teacher labels only traffic it never saw.
            "warm" => ("train.jsonl", "val.jsonl", "traffic.jsonl", "test.jsonl", false),
            other => bail!("--scenario {other}: use cold, drift (sentiment) or warm"),
        };
        anyhow::ensure!(
            loop_data.is_dir(),
            "{} is missing: run python3 models/pipeline/teacher_head.py and models/pipeline/loop_data.py",
            loop_data.display()
        );
        self.ensure_python_tools()?;
        let work = self.target.join("distill").join(format!("{}-{}", run.task, run.scenario));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let head = |file: &str, n: Option<usize>| -> Result<PathBuf> {
            let text = std::fs::read_to_string(data.join(file))?;
            let lines: Vec<&str> =
                text.lines().filter(|l| !l.trim().is_empty()).take(n.unwrap_or(usize::MAX)).collect();
            let out = work.join(file.replace('/', "-"));
            std::fs::write(&out, lines.join("\n") + "\n")?;
            Ok(out)
        };
        let stream = head(stream, run.stream_rows)?;
        let report = head(report, run.report_rows)?;
        let live = work.join("live").join(plugin);
        copy_dir(&self.plugins_dir().join(plugin), &live)?;

        let teacher = format!("{plugin}-teacher");
        step(&format!("starting the teacher tier: edgecascade serve with {teacher}"));
        let tier = Tier::start(self, &[teacher.as_str()])?;
        let mut trainer =
            format!("python3 {} --task {}", self.root.join("models/pipeline/distill.py").display(), run.task);
        if run.hard {
            trainer += " --hard";
        }
        step(&format!(
            "{} start, {}: {} rounds of serve -> retrain -> shadow -> gate -> promote",
            run.scenario, run.task, run.rounds
        ));
        let started = std::time::Instant::now();
        let status = Command::new(self.binary())
            .arg("distill")
            .arg("--plugin")
            .arg(&live)
            .arg("--seed")
            .arg(data.join(seed))
            .arg("--check")
            .arg(data.join(check))
            .arg("--stream")
            .arg(&stream)
            .arg("--report")
            .arg(&report)
            .args(["--rounds", &run.rounds.to_string(), "--trainer", &trainer, "--cloud", &tier.url])
            .args(["--cloud-model", &teacher, "--deadline", "30s", "--cloud-timeout", "30s"])
            .args(if cold { &["--cold-start"][..] } else { &[][..] })
            .arg("--work")
            .arg(work.join("loop"))
            .arg("--svg")
            .arg(work.join("loop.svg"))
            .args(extra)
            .status()?;
        anyhow::ensure!(status.success(), "edgecascade distill failed with {status}");
        eprintln!(
            "{} {} took {:.0} s; the curve is in {}",
            run.task,
            run.scenario,
            started.elapsed().as_secs_f64(),
            work.join("loop.svg").display()
        );
        tier.stop()
    }
}
