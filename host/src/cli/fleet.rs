//! `edgecascade fleet`: the trainer's side of a fleet, and `serve`'s device flags.

use super::Global;
use super::cascade::CascadeArgs;
use super::distill::{LoopArgs, sibling};
use anyhow::Context;
use edgecascade::distill::{Loop, LoopData};
use edgecascade::fleet::channel::{self, Announcement};
use edgecascade::fleet::collect::Collector;
use edgecascade::fleet::{Fleet, check_token};
use edgecascade::spool::DEFAULT_SPOOL_CAP;
use edgecascade::{CascadeConfig, Metrics};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `serve`'s fleet flags: the device side.
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Fleet (a device)")]
pub struct DeviceArgs {
    /// Join a fleet through this NATS server (nats://HOST:PORT; JetStream on): ship every escalation
    /// record to its stream from a disk spool, and follow the package channel for every served
    /// plugin. The device serves while the server is unreachable, and catches up when it is back.
    #[arg(long, value_name = "URL", conflicts_with = "escalation_log")]
    pub nats: Option<String>,

    /// This device's id in the fleet: 1-64 ASCII letters, digits, '-' or '_' [default: the host name].
    #[arg(long, value_name = "ID", requires = "nats")]
    pub device_id: Option<String>,

    /// Where the spool (records not yet acknowledged) and fetched packages are kept.
    #[arg(long, value_name = "DIR", default_value = "edgecascade-fleet")]
    pub fleet_dir: PathBuf,

    /// The spool's cap on disk (64MiB, 512KiB…); past it the oldest records are dropped, and
    /// edgecascade_ship_dropped_total counts them [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub spool_cap: Option<u64>,

    /// Ship records, but do not follow the package channel.
    #[arg(long, requires = "nats")]
    pub no_follow: bool,
}

impl DeviceArgs {
    /// The device id: --device-id, else the host name made into a subject token.
    pub fn device_id(&self) -> anyhow::Result<String> {
        let id = match &self.device_id {
            Some(id) => id.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                    .unwrap_or_else(|_| "device".into());
                let token: String = host
                    .trim()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                    .take(64)
                    .collect();
                if token.is_empty() { "device".into() } else { token }
            }
        };
        check_token("device id (--device-id)", &id)?;
        Ok(id)
    }

    /// The spool cap.
    pub fn spool_cap(&self) -> u64 {
        self.spool_cap.unwrap_or(DEFAULT_SPOOL_CAP)
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse().map_err(|e| format!("{text:?} is not a size like 64MiB: {e}"))?;
    if size.as_u64() < 4096 {
        return Err(format!("{text} is below the smallest spool, 4KiB"));
    }
    Ok(size.as_u64())
}

/// The trainer's side of a fleet: publish packages, and run the loop on what the devices ship.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(clap::Subcommand)]
enum FleetCommand {
    Publish(PublishArgs),
    Train(Box<TrainArgs>),
}

/// Publish a package version on the fleet's channel: every device that serves the plugin fetches it.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    edgecascade fleet publish --nats nats://127.0.0.1:4222 target/plugins/sentiment\n\n\
    The package is verified first (hashes, and the signature when --trust lists keys). Devices verify\n\
    it again under their own --trust keys, run it in shadow on their recent inputs, and promote it.\n\
    Prints the announcement as JSON. Exit status: 0 published, 2 error.")]
pub struct PublishArgs {
    /// The fleet's NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,

    /// The package directory.
    #[arg(value_name = "DIR")]
    package: PathBuf,
}

/// Run the distillation loop on a fleet's escalation records, and publish each promoted version.
#[derive(clap::Args)]
#[command(after_help = "Example (the trainer machine; the devices run `serve --nats URL`):\n  \
    edgecascade fleet train --nats nats://10.0.0.5:4222 --plugin trainer/sentiment --cold-start \\\n    \
    --seed seed.jsonl --check check.jsonl --cloud http://127.0.0.1:8080/v1 --cloud-model sentiment-teacher \\\n    \
    --key release.key --min-records 200 --every 10m\n\n\
    Each round collects every record the devices shipped (a durable consumer: nothing is missed while\n\
    the trainer is down; each record id is kept once), retrains on --seed plus all records kept, and\n\
    gates the candidate on --check through the cascade, as `distill` does. A promoted version is\n\
    published on the channel. With --cold-start and nothing on the channel yet, the first model is\n\
    trained from --seed alone and published. Each event is a JSON line on stdout.\n\
    Exit status: 0 done (--once), 2 error.")]
pub struct TrainArgs {
    /// The fleet's NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,

    /// The trainer's live package directory: what the fleet serves; each promoted version lands here.
    #[arg(long, value_name = "DIR")]
    plugin: PathBuf,

    /// Collect and run one round, then exit (a cron job, or a simulation's step).
    #[arg(long)]
    once: bool,

    /// Retrain only once this many new records were collected.
    #[arg(long, value_name = "N", default_value_t = 1)]
    min_records: u64,

    /// How long to wait between collections (without --once).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    every: Duration,

    #[command(flatten)]
    learn: LoopArgs,

    #[command(flatten)]
    cascade: CascadeArgs,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        FleetCommand::Publish(args) => publish(global, args),
        FleetCommand::Train(args) => train(global, args),
    }
}

fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Connects and makes the stream and buckets, failing within 15 s when the server is unreachable.
async fn connect(url: &str, name: &str) -> anyhow::Result<Fleet> {
    let fleet = Fleet::connect(url, name, Metrics::default()).await?;
    tokio::time::timeout(Duration::from_secs(15), fleet.setup())
        .await
        .map_err(|_| anyhow::anyhow!("no NATS server with JetStream answered at {url} within 15 s"))??;
    Ok(fleet)
}

fn publish(global: &Global, args: &PublishArgs) -> anyhow::Result<ExitCode> {
    let runtime = global.runtime()?;
    let package = runtime.verify(&args.package)?;
    let announcement = tokio()?.block_on(async {
        let fleet = connect(&args.nats, "edgecascade-publisher").await?;
        let announced = channel::publish(&fleet, &package, &publisher()).await?;
        fleet.flush().await?;
        anyhow::Ok(announced)
    })?;
    println!("{}", serde_json::to_string(&announcement)?);
    eprintln!("published {} {} on {}", announcement.plugin, announcement.version, args.nats);
    Ok(ExitCode::SUCCESS)
}

fn publisher() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn train(global: &Global, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let cloud = args.cascade.client()?.context("fleet train needs --cloud URL: the large model is the teacher")?;
    let learn = &args.learn;
    let config = learn.config(1, args.cascade.audit_rate)?;
    let trainer = learn.trainer()?;
    let data = LoopData { seed: learn.seed.clone(), check: learn.gold()?, stream: Vec::new(), report: None };
    let work = learn.work.clone().unwrap_or_else(|| sibling(&args.plugin, "fleet"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let runtime = global.runtime()?;
    let live = super::load_with_progress(&runtime, runtime.verify(&args.plugin)?)?;
    args.cascade.config(&live)?;
    let name = live.name().to_string();
    check_token("plugin name", &name)?;
    let settings = |plugin: &edgecascade::Plugin| {
        args.cascade.config(plugin).unwrap_or_else(|_| CascadeConfig::for_plugin(plugin))
    };
    let the_loop = Loop::new(&runtime, cloud, settings, &trainer, &args.plugin, &work, config);
    // Remembered in --work: each `--once` round or restart would otherwise pay for the check set again.
    let teacher = the_loop.teacher_remembered_in(&work.join("teacher-replies.jsonl"))?;
    let tokio = tokio()?;
    let fleet = tokio.block_on(connect(&args.nats, &format!("edgecascade-trainer-{name}")))?;
    let records = work.join("records.jsonl");
    let mut collector = tokio.block_on(Collector::open(&fleet, &name, &format!("trainer-{name}"), &records))?;
    let publish_live = |why: &str| -> anyhow::Result<Announcement> {
        let package = runtime.verify(&args.plugin)?;
        let announced = tokio.block_on(async {
            let a = channel::publish(&fleet, &package, &publisher()).await?;
            fleet.flush().await?;
            Ok::<_, edgecascade::Error>(a)
        })?;
        event(serde_json::json!({"event": "published", "why": why, "plugin": name, "version": announced.version}));
        Ok(announced)
    };
    if tokio.block_on(channel::latest(&fleet, &name))?.is_none() {
        if learn.cold_start {
            eprintln!("cold start: training {name}'s first model from {} alone", learn.seed.display());
            the_loop.cold_start(&data, &teacher)?;
            publish_live("cold start")?;
        } else {
            publish_live("the channel had no version yet")?;
        }
    }
    let mut round = std::fs::read_dir(&work)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("round-")?.parse::<usize>().ok()).max())
        .ok()
        .flatten()
        .unwrap_or(0);
    let mut new_records = 0;
    loop {
        let collected = tokio.block_on(collector.drain())?;
        new_records += collected.by_device.values().sum::<u64>();
        event(serde_json::json!({"event": "collected", "plugin": name, "collected": collected}));
        if new_records >= args.min_records.max(1) {
            round += 1;
            let step = the_loop.step(round, std::slice::from_ref(&records), &data, &teacher)?;
            let candidate = step.candidate.manifest().plugin.version.clone();
            let verdict = step.report.verdict;
            event(serde_json::json!({
                "event": "round", "plugin": name, "round": round, "trained_on": collected.total,
                "candidate": candidate, "verdict": verdict, "promoted": step.promoted,
                "live": step.report.live, "challenger": step.report.candidate,
            }));
            eprintln!("round {round}: {name} {candidate}: {}", verdict.describe());
            if step.promoted {
                publish_live("promoted")?;
            }
            new_records = 0;
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(args.every);
    }
}

/// One event as a JSON line on stdout.
fn event(value: serde_json::Value) {
    use std::io::Write;
    println!("{value}");
    let _ = std::io::stdout().flush();
}
