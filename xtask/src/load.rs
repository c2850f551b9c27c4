//! `cargo xtask load`: a bounded load test on loopback against `serve`, counting errors and sampling
//! the server's resident memory.

use super::{Project, Tier, step};
use anyhow::Result;
use std::time::{Duration, Instant};

/// `cargo xtask load` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Keep-alive connections, each on its own thread.
    #[arg(long, value_name = "N", default_value_t = 64)]
    connections: usize,
    /// How long to drive the server, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60)]
    seconds: u64,
}

impl Project {
    /// A bounded load test on loopback: N keep-alive connections for S seconds
    /// against `serve`, counting errors and sampling the server's resident memory.
    pub(crate) fn load(&self, args: &Args) -> Result<()> {
        let (connections, seconds) = (args.connections, args.seconds);
        step(&format!("load: {connections} connections for {seconds} s against serve (news-topic, local only)"));
        let tier = Tier::start(self, &["news-topic"])?;
        let url = format!("{}/plugins/news-topic/infer", tier.url);
        let pid = tier.child.id();
        let rss = move || -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0)
        };
        let texts = [
            "The central bank raised interest rates again",
            "The striker scored twice as the champions won the cup final",
            "Parliament passed the budget bill after a long debate",
            "The new smartphone chip doubles battery life",
            "The film won three awards at the festival",
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        let start_rss = rss();
        let sampler = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while std::time::Instant::now() < deadline {
                samples.push(rss());
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
            samples
        });
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                let url = url.clone();
                std::thread::spawn(move || load_worker(&url, texts[i % texts.len()], deadline))
            })
            .collect();
        let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
        for w in workers {
            let (o, e, l) = w.join().map_err(|_| anyhow::anyhow!("a load worker panicked"))?;
            ok += o;
            errors += e;
            latencies.extend(l);
        }
        let samples = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
        let end_rss = rss();
        tier.stop()?;
        latencies.sort_unstable();
        let pct = |q: f64| {
            latencies.get(((latencies.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "connections {connections}, {seconds} s: {ok} ok, {errors} errors, {:.0} requests/s",
            ok as f64 / seconds as f64
        );
        println!("latency ms: p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2}", pct(0.5), pct(0.95), pct(0.99), pct(1.0));
        println!(
            "server RSS MiB: start {:.1}, samples {:?}, end {:.1}",
            start_rss as f64 / 1024.0,
            samples.iter().map(|k| (*k as f64 / 1024.0).round()).collect::<Vec<_>>(),
            end_rss as f64 / 1024.0
        );
        anyhow::ensure!(errors == 0, "{errors} requests failed");
        Ok(())
    }
}

/// One keep-alive connection (a ureq agent of its own) sending requests until the deadline:
/// returns (successes, errors, latencies in µs).
fn load_worker(url: &str, text: &str, deadline: Instant) -> (u64, u64, Vec<u64>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({"text": text, "mode": "local_only"});
    let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
    while Instant::now() < deadline {
        let started = Instant::now();
        let answered = agent
            .post(url)
            .send_json(&body)
            .and_then(|mut reply| Ok((reply.status().as_u16(), reply.body_mut().read_json::<serde_json::Value>()?)))
            .is_ok_and(|(status, reply)| status == 200 && reply["label"].is_string());
        if answered {
            ok += 1;
            latencies.push(started.elapsed().as_micros() as u64);
        } else {
            errors += 1;
        }
    }
    (ok, errors, latencies)
}
