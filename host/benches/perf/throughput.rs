//! Requests/s of the news-topic plugin (LocalOnly) with 1 and 2 client threads (and 4 over HTTP):
//! in process (`Router::route`) and over HTTP on loopback (`edgecascade::serve::run`, axum).

use crate::common::{TextVariants, load, test_text, with_instances};
use criterion::{Criterion, SamplingMode, Throughput};
use edgecascade::serve::AppState;
use edgecascade::{CascadeConfig, Metrics, Mode, Plugin, Router, Source};
use std::cell::OnceCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `iters` calls of `f` split across `threads` clients and returns the wall time. With
/// `on_caller`, client 0 runs on the calling thread (as every other benchmark does) and the others
/// on scoped threads; without it, every client gets a fresh scoped thread.
fn parallel(threads: u64, iters: u64, on_caller: bool, f: impl Fn(usize) + Sync) -> Duration {
    let f = &f;
    let share = |t: u64| iters / threads + u64::from(t < iters % threads);
    let spawned = if on_caller { 1..threads } else { 0..threads };
    let barrier = std::sync::Barrier::new(spawned.end as usize - spawned.start as usize + 1);
    let barrier = &barrier;
    std::thread::scope(|s| {
        for t in spawned {
            s.spawn(move || {
                barrier.wait();
                for _ in 0..share(t) {
                    f(t as usize);
                }
            });
        }
        barrier.wait();
        let started = Instant::now();
        if on_caller {
            for _ in 0..share(0) {
                f(0);
            }
        }
        started
    })
    // The scope joined the other threads before returning, so this includes them.
    .elapsed()
}

/// CPU seconds used so far by this process, and by the whole machine (every core, busy time).
/// Read from /proc (Linux; USER_HZ = 100); `None` elsewhere.
fn cpu_seconds() -> Option<(f64, f64)> {
    const HZ: f64 = 100.0;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is the 3rd field, utime the 14th, stime the 15th.
    let own: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let own = (own.get(11)?.parse::<f64>().ok()? + own.get(12)?.parse::<f64>().ok()?) / HZ;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let all: Vec<f64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy = (all.iter().sum::<f64>() - all.get(3)? - all.get(4)?) / HZ;
    Some((own, busy))
}

/// Runs `f` and says how many cores this process and everything else kept busy meanwhile, so a
/// reader can tell whether two clients had both cores to themselves.
fn with_cpu_report(id: &str, f: impl FnOnce()) {
    let before = cpu_seconds();
    let started = Instant::now();
    f();
    let wall = started.elapsed().as_secs_f64();
    // Criterion's filter may have skipped the benchmark: then there is nothing to report.
    if wall < 0.5 {
        return;
    }
    if let (Some((own0, all0)), Some((own1, all1))) = (before, cpu_seconds()) {
        let own = (own1 - own0) / wall;
        let others = ((all1 - all0) - (own1 - own0)).max(0.0) / wall;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        eprintln!("{id}: this process kept {own:.2} cores busy, other processes {others:.2} (of {cores})");
    }
}

/// The server, in process, on an ephemeral loopback port, and one HTTP client per thread.
struct Server {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    url: String,
    /// Request bodies over [`TextVariants`], taken in turn.
    bodies: Vec<String>,
    turn: AtomicUsize,
    agents: Vec<ureq::Agent>,
}

impl Server {
    fn start(plugin: &Plugin, texts: &TextVariants) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let metrics = Metrics::default();
        let router = Router::new(plugin.clone(), None, CascadeConfig::for_plugin(plugin), metrics.clone());
        let state = AppState::new(vec![router], metrics);
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(edgecascade::serve::run(listener, state, async {
            stopped.await.ok();
        }));
        let server = Server {
            rt,
            stop,
            task,
            url: format!("http://{addr}/v1/plugins/news-topic/infer"),
            bodies: (0..64)
                .map(|_| serde_json::json!({"text": texts.next_text(), "mode": "local_only"}).to_string())
                .collect(),
            turn: AtomicUsize::new(0),
            agents: (0..4).map(|_| ureq::Agent::new_with_defaults()).collect(),
        };
        let first: serde_json::Value = serde_json::from_slice(&server.post(0)).expect("reply JSON");
        assert_eq!(first["source"], "local", "{first}");
        eprintln!("serving news-topic on {addr}: {}", first["label"]);
        server
    }

    /// One `POST /v1/plugins/news-topic/infer` on client `t`'s connection; the response body.
    fn post(&self, t: usize) -> Vec<u8> {
        let mut response = self.agents[t]
            .post(&self.url)
            .header("content-type", "application/json")
            .send(self.bodies[self.turn.fetch_add(1, Ordering::Relaxed) % self.bodies.len()].as_str())
            .expect("POST infer");
        response.body_mut().read_to_vec().expect("response body")
    }

    fn stop(self) {
        drop(self.agents);
        self.stop.send(()).ok();
        self.rt.block_on(self.task).expect("server task").expect("server");
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// `throughput/inprocess_{1,2,2_spawned}` and `throughput/http_{1,2,4}`: time per request
/// (criterion also prints requests/s).
pub fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let texts = TextVariants::new(&test_text("news"));
    let plugin: OnceCell<Plugin> = OnceCell::new();
    // Two instances, so two requests can run in the guest at once.
    let plugin = || {
        plugin.get_or_init(|| {
            let p = load(&with_instances(tmp.path(), "news-topic", 2));
            assert_eq!(p.manifest().limits.instances, 2);
            p
        })
    };
    let router: OnceCell<Router> = OnceCell::new();
    let server: OnceCell<Server> = OnceCell::new();

    let mut group = c.benchmark_group("throughput");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    // `inprocess_2_spawned`: both clients on fresh threads, the caller only waits.
    for (threads, on_caller, id) in
        [(1u64, true, "inprocess_1"), (2, true, "inprocess_2"), (2, false, "inprocess_2_spawned")]
    {
        with_cpu_report(&format!("throughput/{id}"), || {
            group.bench_function(id, |b| {
                let router = router.get_or_init(|| {
                    let p = plugin();
                    Router::new(p.clone(), None, CascadeConfig::for_plugin(p), Metrics::default())
                });
                b.iter_custom(|iters| {
                    parallel(threads, iters, on_caller, |_| {
                        let reply = router.route(texts.next_input(), Mode::LocalOnly);
                        assert_eq!(reply.source, Source::Local);
                    })
                })
            });
        });
    }
    // Four clients too: a client waits idle for each response, so two cannot keep two cores busy.
    for clients in [1u64, 2, 4] {
        let id = format!("http_{clients}");
        with_cpu_report(&format!("throughput/{id}"), || {
            group.bench_function(&id, |b| {
                let server = server.get_or_init(|| Server::start(plugin(), &texts));
                b.iter_custom(|iters| {
                    parallel(clients, iters, true, |t| {
                        std::hint::black_box(server.post(t));
                    })
                })
            });
        });
    }
    group.finish();
    if let Some(server) = server.into_inner() {
        server.stop();
    }
}
