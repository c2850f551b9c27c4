//! `cargo xtask demo`: the main job. A cloud tier, the edge cascade over an easy and a hard
//! test set, what each strategy costs, and a short distillation loop.

use super::distill::LoopRun;
use super::{Project, Tier, step};
use anyhow::{Result, bail};
use std::process::Command;

/// `cargo xtask demo` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Only the first N rows of each test split (and of the loop's stream and report).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

impl Project {
    /// The story on one machine: a cloud tier, the edge cascade over an easy
    /// and a hard test set, and what each strategy costs.
    pub(crate) fn demo(&self, args: &Args) -> Result<()> {
        let limit = args.limit;
        step("starting the cloud tier: edgecascade serve with the large plugins");
        let tier = Tier::start(self, &["news-topic-large", "sentiment-large"])?;
        eprintln!("tier listening on {}", tier.url);
        let tasks = [("news", "news-topic", "easy"), ("sentiment", "sentiment", "hard")];
        let mut table = Vec::new();
        for (task, plugin, traffic) in tasks {
            let data = self.root.join(format!("models/data/{task}/test.jsonl"));
            let text = std::fs::read_to_string(&data)?;
            let lines: Vec<&str> =
                text.lines().filter(|l| !l.trim().is_empty()).take(limit.unwrap_or(usize::MAX)).collect();
            let labels: Vec<String> = lines
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).map(|v| v["label"].as_str().unwrap_or("").to_string())
                })
                .collect::<Result<_, _>>()?;
            let batch = self.target.join(format!("demo-{task}.jsonl"));
            std::fs::write(&batch, lines.join("\n") + "\n")?;

            step(&format!("{task}: the edge host ({plugin}) routes {} requests through the cascade", lines.len()));
            let out = Command::new(self.binary())
                .args(["run", "--plugin"])
                .arg(self.plugins_dir().join(plugin))
                .arg("--jsonl")
                .arg(&batch)
                .args(["--cloud", &tier.url, "--deadline", "30s", "--cloud-timeout", "30s", "--cache-entries", "0"])
                .output()?;
            if !out.status.success() && out.status.code() != Some(1) {
                bail!("edgecascade run failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let replies: Vec<serde_json::Value> =
                String::from_utf8_lossy(&out.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
            anyhow::ensure!(replies.len() == labels.len(), "{} replies for {} requests", replies.len(), labels.len());
            let correct = replies.iter().zip(&labels).filter(|(r, l)| r["label"].as_str() == Some(l.as_str())).count();
            let local = replies.iter().filter(|r| r["source"] == "local").count();
            let degraded = replies.iter().filter(|r| r["degraded"] == true).count();
            let tokens: u64 = replies.iter().filter_map(|r| r["tokens"]["total_tokens"].as_u64()).sum();

            step(&format!("{task}: eval replays the same set local-only and cloud-only"));
            let out = Command::new(self.binary())
                .args(["eval", "--json", "--plugin"])
                .arg(self.plugins_dir().join(plugin))
                .arg("--data")
                .arg(&batch)
                .args(["--cloud", &tier.url, "--deadline", "30s", "--cloud-timeout", "30s"])
                .output()?;
            anyhow::ensure!(out.status.success(), "edgecascade eval failed: {}", String::from_utf8_lossy(&out.stderr));
            let eval: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let s = &eval["summary"];
            let n = labels.len() as f64;
            table.push(Row {
                task,
                traffic,
                rows: labels.len(),
                mode: "local only",
                accuracy: s["local_accuracy"].as_f64().unwrap_or(0.0),
                local: 1.0,
                calls: 0,
                tokens: 0,
            });
            table.push(Row {
                task,
                traffic,
                rows: labels.len(),
                mode: "cloud only",
                accuracy: s["cloud_accuracy"].as_f64().unwrap_or(0.0),
                local: 0.0,
                calls: labels.len(),
                tokens: s["cloud_only_tokens"].as_u64().unwrap_or(0),
            });
            table.push(Row {
                task,
                traffic,
                rows: labels.len(),
                mode: "cascade",
                accuracy: correct as f64 / n,
                local: local as f64 / n,
                calls: labels.len() - local,
                tokens,
            });
            let agrees = (s["cascade_accuracy"].as_f64().unwrap_or(-1.0) - correct as f64 / n).abs() < 1e-9
                && (s["local_share"].as_f64().unwrap_or(-1.0) - local as f64 / n).abs() < 1e-9;
            eprintln!(
                "{task}: threshold {:.3}; {degraded} degraded replies; eval's cascade {} the live run (PGR {:.2})",
                s["threshold"].as_f64().unwrap_or(0.0),
                if agrees { "matches" } else { "DIFFERS FROM" },
                s["pgr"].as_f64().unwrap_or(0.0)
            );
        }
        tier.stop()?;
        println!(
            "\n{:<10} {:<8} {:>5}  {:<11} {:>9} {:>15} {:>12} {:>8}",
            "task", "traffic", "rows", "strategy", "accuracy", "served locally", "cloud calls", "tokens"
        );
        for r in &table {
            println!(
                "{:<10} {:<8} {:>5}  {:<11} {:>8.1}% {:>14.1}% {:>12} {:>8}",
                r.task,
                r.traffic,
                r.rows,
                r.mode,
                r.accuracy * 100.0,
                r.local * 100.0,
                r.calls,
                r.tokens
            );
        }

        // The loop: from the large model and 300 gold tweets, each round sends fewer requests to the cloud.
        let run = LoopRun {
            task: "sentiment",
            scenario: "cold",
            rounds: 3,
            stream_rows: Some(limit.unwrap_or(2_400)),
            report_rows: Some(limit.unwrap_or(1_000)),
            hard: false,
        };
        println!(
            "\nThe distillation loop, short: a cold start from 300 gold tweets, {} rounds over {} stream requests \
             (the full run: cargo xtask distill)",
            run.rounds,
            run.stream_rows.unwrap_or_default()
        );
        self.loop_scenario(&run, &[])
    }
}

/// One line of the demo's table.
struct Row {
    task: &'static str,
    traffic: &'static str,
    rows: usize,
    mode: &'static str,
    accuracy: f64,
    local: f64,
    calls: usize,
    tokens: u64,
}
