//! Requests/s of the news-topic plugin (LocalOnly) with 1 and 2 client threads: in process
//! (`Router::route`) and over HTTP on loopback (`edgecascade::serve::run`, axum).

use crate::common::{load, test_text, with_instances};
use criterion::{Criterion, SamplingMode, Throughput};
use edgecascade::serve::AppState;
use edgecascade::{CascadeConfig, Input, Metrics, Mode, Router, Source};
use std::time::{Duration, Instant};

/// Runs `iters` calls of `f` split across `threads` threads and returns the wall time.
fn parallel(threads: u64, iters: u64, f: impl Fn(usize) + Sync) -> Duration {
    let f = &f;
    let barrier = std::sync::Barrier::new(threads as usize + 1);
    let barrier = &barrier;
    let started = std::thread::scope(|s| {
        for t in 0..threads {
            let n = iters / threads + u64::from(t < iters % threads);
            s.spawn(move || {
                barrier.wait();
                for _ in 0..n {
                    f(t as usize);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    // The scope joined every thread before returning.
    started.elapsed()
}

/// `throughput/{inprocess,http}_{1,2}`: time per request; criterion also prints requests/s.
pub fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Two instances, so two requests can run in the guest at once.
    let plugin = load(&with_instances(tmp.path(), "news-topic", 2));
    assert_eq!(plugin.manifest().limits.instances, 2);
    let text = test_text("news");
    let input = Input::text(text.clone());
    let config = CascadeConfig::for_plugin(&plugin);
    let router = Router::new(plugin.clone(), None, config.clone(), Metrics::default());

    let mut group = c.benchmark_group("throughput");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        group.bench_function(format!("inprocess_{threads}"), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |_| {
                    let reply = router.route(&input, Mode::LocalOnly);
                    assert_eq!(reply.source, Source::Local);
                })
            })
        });
    }

    // The server, in process, on an ephemeral loopback port.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let metrics = Metrics::default();
    let state = AppState::new(vec![Router::new(plugin.clone(), None, config, metrics.clone())], metrics);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(edgecascade::serve::run(listener, state, async {
        stopped.await.ok();
    }));
    let url = format!("http://{addr}/v1/plugins/news-topic/infer");
    let body = serde_json::json!({"text": text, "mode": "local_only"}).to_string();
    let agents: Vec<ureq::Agent> = (0..2).map(|_| ureq::Agent::new_with_defaults()).collect();
    let post = |agent: &ureq::Agent| -> Vec<u8> {
        let mut response =
            agent.post(&url).header("content-type", "application/json").send(body.as_str()).expect("POST infer");
        response.body_mut().read_to_vec().expect("response body")
    };
    let first: serde_json::Value = serde_json::from_slice(&post(&agents[0])).expect("reply JSON");
    assert_eq!(first["source"], "local", "{first}");
    eprintln!("serving on {addr}: {}", first["answer"]["label"]);

    for clients in [1u64, 2] {
        group.bench_function(format!("http_{clients}"), |b| {
            b.iter_custom(|iters| {
                parallel(clients, iters, |t| {
                    std::hint::black_box(post(&agents[t]));
                })
            })
        });
    }
    group.finish();

    drop(agents);
    stop.send(()).ok();
    rt.block_on(server).expect("server task").expect("server");
    rt.shutdown_timeout(Duration::from_secs(1));
}
