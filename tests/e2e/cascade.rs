//! The cascade over real HTTP on 127.0.0.1: the real tier for escalations,
//! and purpose-built misbehaving servers for every cloud fault.

use crate::servers::*;
use crate::support::*;
use edgecascade::cloud::{
    BreakerState, ChatRequest, CloudClient, CloudError, HttpConfig, OpenAi, Resilient, RetryPolicy,
};
use edgecascade::router::{BudgetLimits, EscalationLog};
use edgecascade::{CascadeConfig, Local, Metrics, Mode, Reason, Router, Source};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn client(url: &str, policy: RetryPolicy) -> Arc<Resilient<OpenAi>> {
    let mut config = HttpConfig::new(url, "EDGECASCADE_TEST_NO_KEY");
    config.read_timeout = Duration::from_millis(800);
    config.connect_timeout = Duration::from_millis(300);
    Arc::new(Resilient::new(OpenAi::new(config), policy))
}

/// The edge router: news-topic, escalating everything below `threshold`.
fn edge(
    cloud: Option<Arc<dyn CloudClient>>,
    threshold: f32,
    tweak: impl FnOnce(&mut CascadeConfig),
) -> (Router, Metrics) {
    // Through the builder an embedder uses: the manifest's policy, then these settings.
    let metrics = Metrics::default();
    let mut router = Router::builder(loaded("news-topic")).metrics(metrics.clone()).configure(|config| {
        config.threshold = threshold;
        config.deadline = Duration::from_secs(2);
        config.cloud_model = "news-topic-large".into();
        tweak(config);
    });
    if let Some(cloud) = cloud {
        router = router.cloud(cloud);
    }
    (router.build(), metrics)
}

fn assert_low_confidence_locally() {
    let Local::Answered(a) = loaded("news-topic").infer(&text(AMBIGUOUS)).unwrap() else { panic!("beyond?") };
    assert!(a.confidence < 1.0, "the ambiguous text must not be certain locally: {a:?}");
}

#[test]
fn a_low_confidence_request_escalates_to_the_tier_and_returns_its_answer() {
    assert_low_confidence_locally();
    let (router, _) = edge(Some(client(&tier().url, fast_policy())), 1.0, |_| {});
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!(
        (reply.source, reply.reason, reply.degraded),
        (Source::Cloud, Reason::LowConfidence, false),
        "{reply:?}"
    );
    let Local::Answered(large) = loaded("news-topic-large").infer(&text(AMBIGUOUS)).unwrap() else { panic!() };
    let answer = reply.answer.unwrap();
    assert_eq!(answer.label, large.label);
    assert!(
        (answer.confidence - large.confidence).abs() < 1e-6,
        "the tier's confidence comes back: {answer:?} vs {large:?}"
    );
    assert!(reply.tokens.unwrap().total_tokens > 0);
    assert!(reply.local_answer.is_some() && reply.latency_ms.cloud.is_some());
}

#[test]
fn a_confident_request_stays_local() {
    let fake = FakeCloud::start(Behaviour::Reply("business".into()));
    let (router, _) = edge(Some(client(&fake.url, fast_policy())), 0.0, |_| {});
    let reply = router.route(&text("The central bank raised interest rates again"), Mode::Auto);
    assert_eq!((reply.source, reply.reason), (Source::Local, Reason::Confident));
    assert_eq!(fake.hits(), 0);
}

#[test]
fn forced_local_and_forced_cloud() {
    let (router, _) = edge(Some(client(&tier().url, fast_policy())), 1.0, |_| {});
    let local = router.route(&text(AMBIGUOUS), Mode::LocalOnly);
    assert_eq!((local.source, local.reason), (Source::Local, Reason::ForcedLocal));
    assert!(local.latency_ms.cloud.is_none());
    let cloud = router.route(&text(AMBIGUOUS), Mode::CloudOnly);
    assert_eq!((cloud.source, cloud.reason), (Source::Cloud, Reason::ForcedCloud));
    assert!(cloud.latency_ms.local.is_none() && cloud.answer.is_some());
}

#[test]
fn beyond_inputs_escalate() {
    let fake = FakeCloud::start(Behaviour::Reply("tech".into()));
    let (router, _) = edge(Some(client(&fake.url, fast_policy())), 0.0, |_| {});
    let reply = router.route(&text("Qx"), Mode::Auto);
    assert_eq!((reply.source, reply.reason), (Source::Cloud, Reason::Beyond), "{reply:?}");
    assert!(reply.beyond.is_some());
    assert_eq!(reply.answer.unwrap().label.as_deref(), Some("tech"));
}

#[test]
fn an_input_beyond_the_tier_too_is_a_422_and_not_retried() {
    let (router, _) = edge(Some(client(&tier().url, fast_policy())), 0.0, |_| {});
    let reply = router.route(&text("Qx"), Mode::Auto);
    assert_eq!((reply.source, reply.degraded), (Source::LocalFallback, true), "{reply:?}");
    assert!(reply.answer.is_none(), "neither tier answers");
    let failure = reply.cloud_error.unwrap();
    assert_eq!(failure.kind, "client_error");
    assert!(failure.message.contains("HTTP 422"), "{}", failure.message);
}

#[test]
fn the_circuit_opens_and_closes_again() {
    let fake = FakeCloud::start(Behaviour::Status(500, None));
    let policy = RetryPolicy {
        attempts: 1,
        breaker_threshold: 3,
        breaker_cool_down: Duration::from_millis(300),
        ..fast_policy()
    };
    let cloud = client(&fake.url, policy);
    let (router, metrics) = edge(Some(cloud.clone()), 1.0, |c| c.cache_entries = 0);
    for _ in 0..3 {
        assert_eq!(router.route(&text(AMBIGUOUS), Mode::Auto).cloud_error.map(|e| e.kind), Some("server_error"));
    }
    assert_eq!(cloud.breaker_state(), BreakerState::Open);
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!(reply.cloud_error.map(|e| e.kind), Some("circuit_open"));
    assert_eq!(fake.hits(), 3, "an open circuit does not call the cloud");
    assert!(metrics.render().contains("kind=\"circuit_open\"} 1"));
    fake.set(Behaviour::Reply("politics".into()));
    std::thread::sleep(Duration::from_millis(350));
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!(reply.source, Source::Cloud, "{reply:?}");
    assert_eq!(cloud.breaker_state(), BreakerState::Closed);
}

#[test]
fn the_budget_runs_out_and_requests_fall_back() {
    let fake = FakeCloud::start(Behaviour::Reply("business".into()));
    let (router, metrics) = edge(Some(client(&fake.url, fast_policy())), 1.0, |c| {
        c.budget = BudgetLimits { per_minute: Some(2), per_day: Some(100) };
        c.cache_entries = 0;
    });
    let texts = [
        AMBIGUOUS,
        "The company said the film tax talks with ministers went well",
        "Studio bosses and MPs argued over the levy",
    ];
    let replies: Vec<_> = texts.iter().map(|t| router.route(&text(t), Mode::Auto)).collect();
    assert_eq!(replies[0].source, Source::Cloud);
    assert_eq!(replies[1].source, Source::Cloud);
    assert_eq!(
        (replies[2].source, replies[2].cloud_error.as_ref().map(|e| e.kind)),
        (Source::LocalFallback, Some("budget"))
    );
    assert_eq!(fake.hits(), 2);
    let m = metrics.render();
    assert!(m.contains("edgecascade_cloud_budget_remaining{plugin=\"news-topic\",window=\"minute\"} 0"), "{m}");
    assert!(m.contains("edgecascade_cloud_budget_remaining{plugin=\"news-topic\",window=\"day\"} 98"), "{m}");
}

#[test]
fn identical_inputs_hit_the_answer_cache() {
    let fake = FakeCloud::start(Behaviour::Reply("politics".into()));
    let (router, metrics) = edge(Some(client(&fake.url, fast_policy())), 1.0, |_| {});
    let first = router.route(&text(AMBIGUOUS), Mode::Auto);
    let second = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!((first.cached, second.cached), (false, true));
    assert_eq!(second.answer.unwrap().label.as_deref(), Some("politics"));
    assert_eq!(fake.hits(), 1);
    assert!(metrics.render().contains("edgecascade_cloud_cache_hits_total{plugin=\"news-topic\"} 1"));
}

#[test]
fn redaction_applies_to_the_cloud_request_and_the_log() {
    let fake = FakeCloud::start(Behaviour::Reply("business".into()));
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("news-topic.jsonl");
    let (router, _) = edge(Some(client(&fake.url, fast_policy())), 1.0, |_| {});
    let router = router.with_log(EscalationLog::open(&log_path).unwrap());
    let secret = "Write to jane.doe@example.com or call +44 20 7946 0958 about the merger and the film tax";
    let reply = router.route(&text(secret), Mode::Auto);
    assert_eq!(reply.source, Source::Cloud, "{reply:?}");
    let sent = fake.requests.lock().unwrap().join("\n");
    assert!(!sent.contains("jane.doe") && !sent.contains("7946"), "leaked: {sent}");
    assert!(sent.contains("[EMAIL]") && sent.contains("[PHONE]"), "{sent}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("jane.doe") && !log.contains("7946"), "leaked into the log: {log}");
    let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(line["label"], "business");
    assert!(line["text"].as_str().unwrap().contains("[EMAIL]"));
}

#[test]
fn the_tier_speaks_the_openai_api() {
    let url = &tier().url;
    let body = serde_json::json!({"model": "news-topic-large", "temperature": 0, "max_tokens": 16,
        "messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": "Shares rose after the merger"}]});
    let mut resp = ureq::post(format!("{url}/chat/completions")).send_json(&body).unwrap();
    let reply: serde_json::Value = resp.body_mut().read_json().unwrap();
    assert_eq!(reply["object"], "chat.completion");
    let content: edgecascade::Answer =
        serde_json::from_str(reply["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content.label.as_deref(), Some("business"));
    assert!(reply["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let unknown = serde_json::json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]});
    let err = ureq::post(format!("{url}/chat/completions"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(&unknown)
        .unwrap();
    assert_eq!(err.status().as_u16(), 404);
    let models: serde_json::Value = ureq::get(format!("{url}/models")).call().unwrap().body_mut().read_json().unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["news-topic-large", "sentiment-large"]);
}

/// POSTs `body` without a content type in two parts, a pause between; returns the status line and the rest.
fn slow_post(url: &str, path: &str, body: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1{path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = stream.write_all(rest);
    let mut reply = String::new();
    let read = stream.read_to_string(&mut reply);
    let (status, rest) = reply.split_once("\r\n").unwrap_or((&reply, ""));
    assert!(sent.is_ok() && read.is_ok(), "sent: {sent:?}, read: {read:?}, got {reply:?}");
    (status.to_string(), rest.to_string())
}

#[test]
fn serve_answers_malformed_requests_with_json_errors() {
    // Each case was found by `robustness::the_json_apis_answer_any_body_with_json`.
    let url = &tier().url;
    let post = |path: &str, content_type: Option<&str>, body: &[u8]| {
        let mut request = ureq::post(format!("{url}{path}")).config().http_status_as_error(false).build();
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let mut response = request.send(body).unwrap();
        let error: serde_json::Value = response.body_mut().read_json().unwrap();
        (response.status().as_u16(), error["error"]["code"].as_str().unwrap_or_default().to_string())
    };
    // A plugin name that is not UTF-8: was axum's plain-text 400.
    assert_eq!(post("/plugins/%FF/infer", Some("application/json"), br#"{"text":"x"}"#), (400, "invalid_path".into()));
    // A body without a content type, sent in two parts: was answered and closed before it was
    // read, so a client that sends its whole body before reading (as ureq does) got a broken pipe.
    let (status, body) = slow_post(url, "/plugins/news-topic-large/infer", &[b'x'; 200_000]);
    assert!(status.starts_with("HTTP/1.1 400") && body.contains("invalid_body"), "{status}: {body}");
    // A body over the limit, even with a bad name: 413, and the connection closes with the answer saying
    // so (it was a 400 on a connection the server closed silently; the next request found it dead).
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let over = agent
        .post(format!("{url}/plugins/%FF/infer"))
        .header("content-type", "application/json")
        .send(&vec![b' '; (2 << 20) + (64 << 10)][..])
        .unwrap();
    assert_eq!(over.status().as_u16(), 413);
    assert_eq!(over.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
    drop(over);
    assert_eq!(agent.get(format!("{url}/models")).call().unwrap().status().as_u16(), 200);
    // An input over the cap: was routed, and a huge one ended in a 503 (the plugin past its
    // deadline, and the prompt carrying it over the plugin's output cap).
    let text = "word ".repeat(edgecascade::serve::MAX_INPUT / 5 + 1);
    let infer = serde_json::to_vec(&serde_json::json!({"text": text})).unwrap();
    assert_eq!(
        post("/plugins/news-topic-large/infer", Some("application/json"), &infer),
        (413, "input_too_large".into())
    );
    let chat = serde_json::json!({"model": "news-topic-large", "messages": [{"role": "user", "content": text}]});
    let chat = serde_json::to_vec(&chat).unwrap();
    assert_eq!(post("/chat/completions", Some("application/json"), &chat), (413, "input_too_large".into()));
}

#[test]
fn the_edge_server_reports_fallbacks_in_metrics() {
    let (router, metrics) = edge(Some(client(&refused_url(), fast_policy())), 1.0, |_| {});
    let url = start_app(edgecascade::serve::AppState::new(vec![router], metrics));
    let base = url.trim_end_matches("/v1");
    let reply: serde_json::Value = ureq::post(format!("{url}/plugins/news-topic/infer"))
        .send_json(serde_json::json!({"text": AMBIGUOUS}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(reply["source"], "local_fallback");
    assert_eq!(reply["degraded"], true);
    let text = ureq::get(format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(text.contains("edgecascade_requests_total{plugin=\"news-topic\",source=\"local_fallback\"} 1"), "{text}");
    assert!(
        text.contains("edgecascade_escalations_total{plugin=\"news-topic\",reason=\"low_confidence\"} 1"),
        "{text}"
    );
    assert!(text.contains("edgecascade_request_latency_seconds_bucket"), "{text}");
    assert!(text.contains("edgecascade_local_confidence_bucket"), "{text}");
    let health: serde_json::Value =
        ureq::get(format!("{base}/healthz")).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(health["status"], "ok");
}

#[test]
fn eval_matches_the_router_on_the_same_data() {
    let data = repo_root().join("models/data/news/test.jsonl");
    let rows = 40;
    let out = std::process::Command::new(bin())
        .args(["eval", "--json", "--limit", &rows.to_string(), "--plugin"])
        .arg(plugin("news-topic"))
        .arg("--data")
        .arg(&data)
        // Three cloud calls in flight; the router below makes them one at a time.
        .args(["--cloud", &tier().url, "--deadline", "120s", "--cloud-timeout", "120s", "--concurrency", "3"])
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &report["summary"];

    // The same rows through the router, in auto mode, as the demo runs them.
    let plugin = loaded("news-topic");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.deadline = Duration::from_secs(120);
    let mut http = HttpConfig::new(&tier().url, "EDGECASCADE_TEST_NO_KEY");
    http.read_timeout = Duration::from_secs(120);
    let cloud = Arc::new(Resilient::new(OpenAi::new(http), fast_policy()));
    let router = Router::new(plugin, Some(cloud), config, Metrics::default());
    let text = std::fs::read_to_string(&data).unwrap();
    let (mut correct, mut local) = (0, 0);
    for line in text.lines().take(rows) {
        let row = edgecascade::eval::Row::from_json_line(line).unwrap();
        let reply = router.route(&row.input, Mode::Auto);
        assert!(!reply.degraded, "{reply:?}");
        correct += (reply.answer.and_then(|a| a.label).as_deref() == Some(row.label.as_str())) as usize;
        local += (reply.source == Source::Local) as usize;
    }
    assert_eq!(summary["cascade_accuracy"].as_f64().unwrap(), correct as f64 / rows as f64);
    assert_eq!(summary["local_share"].as_f64().unwrap(), local as f64 / rows as f64);
    assert_eq!(summary["rows"], rows);
}

#[test]
fn the_serve_binary_starts_answers_and_stops_cleanly() {
    let server = ServeProcess::start([std::ffi::OsString::from("--plugin"), plugin("news-topic").into()]);
    let reply: serde_json::Value = ureq::post(format!("{}/v1/plugins/news-topic/infer", server.base))
        .send_json(serde_json::json!({"text": "The striker scored twice in the cup final", "mode": "local_only"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(reply["label"], "sport");
    let exit = server.stop();
    assert!(exit.success(), "serve exits 0 on SIGTERM: {exit:?}");
}

#[test]
fn fault_a_redirect_loop_is_not_followed() {
    let fake = FakeCloud::start(Behaviour::Redirect);
    let (router, _) = edge(Some(client(&fake.url, fast_policy())), 1.0, |c| c.cache_entries = 0);
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!(reply.cloud_error.map(|e| e.kind), Some("redirect"));
    assert_eq!(fake.hits(), 1, "no redirect is followed, and a redirect is not retried");
}

#[test]
fn https_checks_certificates_by_default() {
    // A plain-HTTP server behind an https:// URL: the TLS handshake fails, and
    // the client reports a connection error rather than talking in the clear.
    let fake = FakeCloud::start(Behaviour::Reply("business".into()));
    let url = format!("https://{}/v1", fake.addr);
    let (router, _) = edge(Some(client(&url, fast_policy())), 1.0, |c| c.cache_entries = 0);
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!(reply.source, Source::LocalFallback);
    let kind = reply.cloud_error.map(|e| e.kind);
    assert!(matches!(kind, Some("connect" | "timeout")), "{kind:?}");
    assert_eq!(fake.hits(), 0, "no request went out in the clear");
}

/// One call straight through the client, without retries.
fn call_once(config: HttpConfig) -> Result<edgecascade::cloud::ChatReply, CloudError> {
    let request = ChatRequest {
        model: "news-topic-large".into(),
        messages: vec![edgecascade::ChatMessage { role: edgecascade::Role::User, content: AMBIGUOUS.into() }],
        max_tokens: 8,
        ..Default::default()
    };
    OpenAi::new(config).complete(&request, Instant::now() + Duration::from_secs(5))
}

#[test]
fn https_refuses_a_self_signed_certificate_by_default() {
    let server = TlsServer::start();
    let url = format!("https://{}/v1", server.addr);
    let err = call_once(HttpConfig::new(&url, "EDGECASCADE_TEST_NO_KEY")).unwrap_err();
    assert!(matches!(&err, CloudError::Connect(m) if m.contains("UnknownIssuer")), "{err:?}");

    let (router, metrics) = edge(Some(client(&url, fast_policy())), 1.0, |c| c.cache_entries = 0);
    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
    assert_eq!((reply.source, reply.degraded), (Source::LocalFallback, true), "{reply:?}");
    assert!(reply.answer.is_some_and(|a| a.label.is_some()), "the local answer stands in");
    assert_eq!(reply.cloud_error.map(|e| e.kind), Some("connect"));
    assert!(metrics.render().contains("edgecascade_cloud_errors_total{plugin=\"news-topic\",kind=\"connect\"} 1"));
}

#[test]
fn https_refuses_a_certificate_for_another_name_or_an_expired_one() {
    for (san, days, why) in [("DNS:example.invalid", "2", "name"), ("IP:127.0.0.1", "-1", "expired")] {
        let server = TlsServer::start_with(san, days);
        // The CA is trusted: only the name or the dates are wrong.
        let mut config = HttpConfig::new(format!("https://{}/v1", server.addr), "EDGECASCADE_TEST_NO_KEY");
        config.ca_pem = Some(server.ca_pem.clone());
        let err = call_once(config).unwrap_err();
        let message = err.to_string().to_lowercase();
        assert!(matches!(err, CloudError::Connect(_)) && message.contains(why), "{san}, {days} days: {err:?}");
    }
}

#[test]
fn https_trusts_a_private_ca_when_configured() {
    let server = TlsServer::start();
    let mut config = HttpConfig::new(format!("https://{}/v1", server.addr), "EDGECASCADE_TEST_NO_KEY");
    config.ca_pem = Some(server.ca_pem.clone());
    // The handshake succeeds; s_server then echoes the request reversed, which is no HTTP reply.
    let err = call_once(config.clone()).unwrap_err();
    assert_eq!(err.kind(), "bad_reply", "{err:?}");

    // PEM with no certificate in it trusts nothing.
    config.ca_pem = Some("not a certificate".into());
    let err = call_once(config).unwrap_err();
    assert!(matches!(&err, CloudError::Connect(m) if m.contains("UnknownIssuer")), "{err:?}");
}

#[test]
fn hot_reload_swaps_atomically_and_refuses_a_broken_version() {
    use edgecascade::serve::{AppState, Reload, watch};
    let tmp = tempfile::tempdir().unwrap();
    let wasm = hostile_wasm();
    let v1 = make_package(&tmp.path().join("v1"), &hostile_manifest(""), &[("hostile.wasm", &wasm)]);
    let metrics = Metrics::default();
    let make = |p: edgecascade::Plugin| {
        let config = CascadeConfig::for_plugin(&p);
        Router::new(p, None, config, Metrics::default())
    };
    let state = AppState::new(vec![make(runtime().load(&v1).unwrap())], metrics);
    let url = start_app(state.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    watch(
        state.clone(),
        runtime().clone(),
        vec![v1.clone()],
        Arc::new(move |p| Ok(make(p))),
        Duration::from_millis(50),
        move |r| tx.send(r).unwrap(),
    );
    // Requests keep flowing on another thread throughout; none may fail.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let reply: serde_json::Value = ureq::post(format!("{url}/plugins/hostile/infer"))
                    .send_json(serde_json::json!({"text": "ok"}))
                    .expect("no request fails during a reload")
                    .body_mut()
                    .read_json()
                    .unwrap();
                assert_eq!(reply["label"], "fine");
                versions.insert(reply["version"].as_str().unwrap().to_string());
            }
            versions
        })
    };
    // Version 2: files first, manifest last (pack does it in that order).
    std::thread::sleep(Duration::from_millis(200));
    edgecascade::plugin::pack(&tmp.path().join("v1/src/plugin.toml"), &[], &tmp.path().join("v2")).unwrap();
    let manifest = std::fs::read_to_string(tmp.path().join("v2/plugin.toml"))
        .unwrap()
        .replace("version = \"1\"", "version = \"2\"");
    std::fs::write(v1.join("plugin.toml"), manifest).unwrap();
    match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        Reload::Swapped { from, to, .. } => assert_eq!((from.as_str(), to.as_str()), ("1", "2")),
        Reload::Refused { error, .. } => panic!("refused a good version: {error}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    // A broken version 3: its module does not match the manifest's hash.
    std::fs::write(v1.join("hostile.wasm"), b"not wasm").unwrap();
    let broken = std::fs::read_to_string(v1.join("plugin.toml")).unwrap().replace("version = \"2\"", "version = \"3\"");
    std::fs::write(v1.join("plugin.toml"), broken).unwrap();
    match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        Reload::Refused { error, .. } => assert!(matches!(error, edgecascade::Error::HashMismatch { .. }), "{error}"),
        other => panic!("a broken version was swapped in: {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let versions = load.join().unwrap();
    assert!(versions.contains("2"), "the new version served: {versions:?}");
    assert!(!versions.contains("3"));
    assert_eq!(state.router("hostile").unwrap().plugin().version(), "2", "the old version keeps serving");
}

#[test]
fn the_official_openai_client_works() {
    let script = repo_root().join("tests/clients/openai_client.py");
    let has_client =
        std::process::Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    assert!(has_client, "the `openai` Python package is needed: pip install openai (.ci/run does)");
    let out = std::process::Command::new("python3").arg(script).arg(&tier().url).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
