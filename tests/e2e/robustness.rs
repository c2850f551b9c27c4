//! Property tests over everything that parses untrusted bytes: whatever comes
//! in, the result is a value or a typed error, never a panic or a hang.
//!
//! cargo-fuzz needs a nightly toolchain; these run on stable, in every test
//! run, a few seconds each. For longer runs (see FUZZING.md):
//! - `PROPTEST_CASES=N`: N cases per target;
//! - `EDGECASCADE_FUZZ_SECS=S`: each target repeats runs with fresh seeds until S seconds have passed;
//! - `PROPTEST_RNG_SEED=X`: replays the one run a failure report names.

use crate::servers::*;
use crate::support::*;
use edgecascade::cloud::{ChatRequest, CloudClient, CloudError, HttpConfig, OpenAi};
use edgecascade::plugin::Manifest;
use edgecascade::serve::AppState;
use edgecascade::{CascadeConfig, Metrics, Router};
use edgecascade_abi::{Answer, ResultFrame, decode_input, decode_load};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestCaseResult, TestRunner};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Checks `test` on values of `strategy`: one run of `PROPTEST_CASES` cases (else `cases`), or with
/// `EDGECASCADE_FUZZ_SECS`, runs with fresh seeds until the time is up. A failure names the seed
/// that replays it.
fn fuzz<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let cases = env("PROPTEST_CASES").unwrap_or(cases);
    let budget = env("EDGECASCADE_FUZZ_SECS").map(Duration::from_secs);
    let replay: Option<u64> = env("PROPTEST_RNG_SEED");
    let started = Instant::now();
    let mut runs = 0u64;
    loop {
        let seed = replay.unwrap_or_else(|| fastrand::u64(..));
        // A failure's seed is also saved in tests/e2e/regressions/<name>.txt; commit the file, and
        // every later run (CI's included) replays those seeds before any new case.
        let config = ProptestConfig {
            cases,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regression_file(name)))),
            ..ProptestConfig::default()
        };
        if let Err(e) = TestRunner::new(config).run(&strategy, &test) {
            panic!("{name}: {e}\nreplay: PROPTEST_RNG_SEED={seed} PROPTEST_CASES={cases}");
        }
        runs += 1;
        if replay.is_some() || budget.is_none_or(|b| started.elapsed() >= b) {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("fuzz {name}: {} cases in {runs} run(s), {secs:.1} s", runs * u64::from(cases));
}

/// `tests/e2e/regressions/<name>.txt`, where a target's failing seeds are kept.
fn regression_file(name: &str) -> &'static str {
    let path = repo_root().join("tests/e2e/regressions").join(format!("{name}.txt"));
    Box::leak(path.to_string_lossy().into_owned().into_boxed_str())
}

/// What the cases of a target came to, printed after it: shows how many got past the first parser.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, outcome: String) {
        *self.0.lock().unwrap().entry(outcome).or_default() += 1;
    }

    fn print(&self, name: &str) {
        eprintln!("fuzz {name} outcomes: {:?}", self.0.lock().unwrap());
    }
}

/// A valid manifest to mutate, so cases reach the validator and not only the TOML parser.
const MANIFEST: &str = "[plugin]\nname = \"p\"\nversion = \"1\"\nabi_version = 1\nlabels = [\"a\"]\n\n[wasm]\nfile = \"p.wasm\"\n\n\
                        [limits]\nmemory = \"64 MiB\"\ndeadline = \"250ms\"\n\n[policy]\nthreshold = 0.5\n";

#[test]
fn manifests_parse_or_fail_cleanly() {
    fuzz("manifests", 2000, ".{0,400}", |text| {
        let _ = Manifest::parse(&text, Path::new("plugin.toml"));
        Ok(())
    });
}

#[test]
fn mutated_manifests_parse_or_fail_cleanly() {
    fuzz("mutated_manifests", 2000, (0usize..MANIFEST.len(), "[ -~\\n]{0,12}"), |(at, junk)| {
        let mut text = MANIFEST.to_string();
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &junk);
        if let Ok(m) = Manifest::parse(&text, Path::new("plugin.toml")) {
            // Whatever parses also round-trips.
            prop_assert_eq!(Manifest::parse(&m.to_toml(), Path::new("plugin.toml")).unwrap(), m);
        }
        Ok(())
    });
}

#[test]
fn result_frames_decode_or_fail_cleanly() {
    fuzz("result_frames", 2000, vec(any::<u8>(), 0..300), |bytes| {
        if let Ok(frame) = ResultFrame::parse(&bytes) {
            let _ = frame.decode::<Answer>();
            let _ = frame.decode::<edgecascade_abi::Prompt>();
        }
        Ok(())
    });
}

#[test]
fn answer_shaped_frames_decode_or_fail_cleanly() {
    fuzz("answer_frames", 2000, (".{0,20}", any::<f32>(), ".{0,30}"), |(label, confidence, extra)| {
        let body =
            format!("{{\"label\":{},\"confidence\":{confidence}{extra}}}", serde_json::to_string(&label).unwrap());
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(body.as_bytes());
        let _ = ResultFrame::parse(&bytes).unwrap().decode::<Answer>();
        Ok(())
    });
}

#[test]
fn load_and_input_frames_decode_or_fail_cleanly() {
    fuzz("load_input_frames", 2000, vec(any::<u8>(), 0..300), |bytes| {
        let _ = decode_load(&bytes);
        let (content_type, payload) = decode_input(&bytes);
        prop_assert!(content_type.len() + payload.len() <= bytes.len());
        Ok(())
    });
}

#[test]
fn cloud_replies_parse_or_fail_cleanly() {
    // Through the real parser of the real plugin: a reply that is not a label is a typed error.
    let p = loaded("news-topic");
    fuzz("plugin_cloud_replies", 2000, ".{0,300}", |text| {
        if let Ok(a) = p.parse_reply(&text) {
            prop_assert!(a.label.is_some() && (0.0..=1.0).contains(&a.confidence));
        }
        Ok(())
    });
}

#[test]
fn artifact_headers_parse_or_fail_cleanly() {
    use edgecascade::engine::aot;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.ecaot");
    let header = prop_oneof![vec(any::<u8>(), 0..200), json_value().prop_map(|v| serde_json::to_vec(&v).unwrap())];
    fuzz("artifact_headers", 1000, (header, any::<bool>(), vec(any::<u8>(), 0..64)), |(header, framed, body)| {
        let mut bytes = Vec::new();
        if framed {
            bytes.extend_from_slice(b"ECAOT001");
            bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&body);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok((h, rest)) = aot::read(&path) {
            prop_assert!(rest.len() <= bytes.len());
            prop_assert_eq!(aot::read_header(&path).unwrap(), h);
        }
        Ok(())
    });
}

#[test]
fn trust_keys_and_signatures_cannot_be_forged_or_crash() {
    use edgecascade::plugin::{TrustPolicy, manifest::Signature};
    let (_, public) = edgecascade::plugin::keygen().unwrap();
    let policy = TrustPolicy::from_hex([&public]).unwrap();
    let manifest = Manifest::parse(MANIFEST, Path::new("plugin.toml")).unwrap();
    let scheme = prop_oneof![Just(None), Just(Some("manifest-bytes-v1".to_string())), ".{0,20}".prop_map(Some)];
    let strategy = (".{0,80}", "[0-9a-fA-F]{0,140}", "[0-9a-f]{0,140}", scheme, vec(any::<u8>(), 0..300));
    fuzz("trust_and_signatures", 2000, strategy, |(key_text, key, ed25519, scheme, file)| {
        let _ = TrustPolicy::from_hex([&key_text]);
        let mut signed = manifest.clone();
        signed.signature = Some(Signature { scheme, key, ed25519 });
        // Without the secret key no table verifies, whatever the bytes around it.
        prop_assert!(policy.check(&signed, &file).is_err());
        let mut by_us = signed.clone();
        by_us.signature.as_mut().unwrap().key = public.clone();
        prop_assert!(policy.check(&by_us, &file).is_err());
        Ok(())
    });
}

#[test]
fn cache_entries_are_used_only_when_intact() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let rt =
        edgecascade::Runtime::new(edgecascade::RuntimeConfig { cache_dir: Some(cache.clone()), ..Default::default() })
            .unwrap();
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(1, ""))]);
    rt.load(&pkg).unwrap();
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let good = std::fs::read(&entry).unwrap();
    let strategy = (vec(any::<u8>(), 0..400), 0u8..3, (0usize..good.len(), any::<u8>()));
    fuzz("cache_entries", 300, strategy, |(junk, how, (at, byte))| {
        let bytes = match how {
            // Any bytes at all.
            0 => junk,
            // A valid header and checksum over junk: only wasmtime's own checks stand in the way.
            1 => [&b"ECMOD001"[..], &sha2::Sha256::digest(&junk), &junk].concat(),
            // The real entry with one byte changed.
            _ => {
                let mut b = good.clone();
                b[at] ^= byte | 1;
                b
            }
        };
        std::fs::write(&entry, &bytes).unwrap();
        let plugin = rt.load(&pkg).map_err(|e| TestCaseError::fail(format!("the load failed: {e}")))?;
        prop_assert!(plugin.infer(&text("ok")).is_ok());
        Ok(())
    });
}

#[test]
fn escalation_logs_reopen_after_any_torn_write() {
    use edgecascade::router::{EscalationLog, Record, record_id};
    let tmp = tempfile::tempdir().unwrap();
    let record = |text: &'static str| Record {
        record: edgecascade::router::RECORD_VERSION,
        id: record_id(),
        ts: 1.0,
        plugin: "p",
        version: "1",
        text,
        label: Some("x"),
        confidence: 1.0,
        scores: &[],
        soft: false,
        teacher: "t",
        reason: "low_confidence",
        local_label: None,
        local_confidence: None,
    };
    let n = std::sync::atomic::AtomicU32::new(0);
    fuzz("escalation_log_reopen", 500, (0usize..4, vec(any::<u8>(), 0..300)), |(whole, tail)| {
        let path = tmp.path().join(format!("{}.jsonl", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        {
            let log = EscalationLog::open(&path).unwrap();
            for _ in 0..whole {
                log.append(&record("whole")).unwrap();
            }
        }
        // A crash in the middle of a write: any bytes, torn anywhere.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &tail).unwrap();
        drop(f);
        let log = EscalationLog::open(&path).unwrap();
        log.append(&record("after")).unwrap();
        let text = std::fs::read(&path).unwrap();
        prop_assert!(text.ends_with(b"\n"));
        let last = text[..text.len() - 1].rsplit(|b| *b == b'\n').next().unwrap();
        let last: Value = serde_json::from_slice(last).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(last["text"].as_str(), Some("after"));
        // Every whole record written before the crash is still there, first, unchanged.
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        for line in &lines[..whole] {
            let v: Value = serde_json::from_slice(line).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["text"].as_str(), Some("whole"));
        }
        Ok(())
    });
}

#[test]
fn anthropic_and_bedrock_replies_are_answers_or_typed_errors() {
    use edgecascade::cloud::{Anthropic, Bedrock, BedrockAuth};
    let request = ChatRequest {
        model: "amazon.nova-micro-v1:0".into(),
        messages: vec![edgecascade::ChatMessage { role: edgecascade::Role::User, content: "Shares rose".into() }],
        max_tokens: 8,
        ..Default::default()
    };
    for shape in [Shape::Anthropic, Shape::Bedrock] {
        let fake = FakeCloud::start_shaped(shape, Behaviour::Raw(Vec::new()));
        let mut config = HttpConfig::new(&fake.url, "EDGECASCADE_TEST_NO_KEY");
        config.read_timeout = Duration::from_secs(2);
        let client: Box<dyn CloudClient> = match shape {
            Shape::Anthropic => Box::new(Anthropic::new(config)),
            _ => Box::new(Bedrock::new(config, BedrockAuth::Bearer("k".into()))),
        };
        let valid: Value = serde_json::from_str(&shape.reply("business")).unwrap();
        let keys: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
        // The API's own reply with one field replaced by anything, or any JSON at all.
        let body = (json_value(), 0..=keys.len()).prop_map(move |(v, i)| match keys.get(i) {
            Some(key) => {
                let mut reply = valid.clone();
                reply[key] = v;
                reply
            }
            None => v,
        });
        let name = format!("{shape:?}_replies").to_lowercase();
        fuzz(&name, 256, body, |body| {
            let bytes = serde_json::to_vec(&body).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                bytes.len()
            );
            fake.set(Behaviour::Raw([head.as_bytes(), &bytes].concat()));
            let deadline = Instant::now() + Duration::from_secs(5);
            match client.complete(&request, deadline) {
                Ok(reply) => prop_assert!(!reply.content.is_empty()),
                Err(e) => prop_assert!(!e.kind().is_empty()),
            }
            prop_assert!(Instant::now() <= deadline);
            Ok(())
        });
    }
}

// ---- Shared strategies ----

/// Any JSON value, with object keys that often are field names the server knows.
fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "text",
            "input",
            "content_type",
            "mode",
            "model",
            "messages",
            "role",
            "content",
            "type",
            "stream",
            "choices",
            "message",
            "usage",
        ])
        .prop_map(String::from),
        ".{0,10}",
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text an input field might hold: short, news-like, or long enough to strain the limits.
fn some_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => ".{0,200}",
        2 => prop::sample::select(vec![
            "The central bank raised interest rates again",
            "The striker scored twice in the cup final",
            "Qx",
            "",
            "   ",
            "jane.doe@example.com +44 20 7946 0958",
        ])
        .prop_map(String::from),
        1 => (".{1,8}", 1usize..300_000).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// Byte-level damage to a serialized body: flips, insertions, deletions, truncation.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, at, byte) in edits {
        let at = if bytes.is_empty() { 0 } else { at % (bytes.len() + 1) };
        match op % 4 {
            0 if at < bytes.len() => bytes[at] ^= byte.max(1),
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4)
}

/// A body: well-formed, mutated, arbitrary JSON, nested past any parser's limit, or plain bytes.
fn body(shaped: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => shaped.clone().prop_map(|v| v.to_string().into_bytes()),
        3 => (shaped, edits()).prop_map(|(v, e)| mutate(v.to_string().into_bytes(), &e)),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..5000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => vec(any::<u8>(), 0..400),
    ]
}

/// A field that is usually the right type and sometimes anything at all.
fn field(usual: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Option<Value>> + Clone {
    prop_oneof![12 => usual.prop_map(Some), 1 => Just(None), 1 => json_value().prop_map(Some)]
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect())
}

// ---- The native JSON API and the OpenAI-compatible API of `serve` ----

/// `serve` with news-topic, escalating to a fake cloud that always answers "business".
struct Api {
    base: String,
    cloud: FakeCloud,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let cloud = FakeCloud::start(Behaviour::Reply("business".into()));
        let plugin = loaded("news-topic");
        let config = CascadeConfig::for_plugin(&plugin);
        let client = Arc::new(OpenAi::new(HttpConfig::new(&cloud.url, "EDGECASCADE_TEST_NO_KEY")));
        let metrics = Metrics::default();
        let router = Router::new(plugin, Some(client), config, metrics.clone());
        let url = start_app(AppState::new(vec![router], metrics));
        Api { base: url.trim_end_matches("/v1").to_string(), cloud }
    })
}

fn infer_body() -> impl Strategy<Value = Value> + Clone {
    let mode = prop_oneof![
        4 => prop::sample::select(vec!["auto", "local_only", "cloud_only"]).prop_map(Value::from),
        1 => ".{0,12}".prop_map(Value::from),
    ];
    let content_type =
        prop::sample::select(vec!["text/plain", "application/json", "image/png", ""]).prop_map(Value::from);
    // Usually exactly one of "text" and "input", as the API asks.
    let text_or_input = prop_oneof![
        6 => field(some_text().prop_map(Value::from)).prop_map(|t| (t, None)),
        2 => field(prop_oneof![some_text().prop_map(Value::from), json_value()]).prop_map(|i| (None, i)),
        1 => (field(some_text().prop_map(Value::from)), field(json_value())),
        1 => Just((None, None)),
    ];
    (
        text_or_input,
        prop_oneof![3 => Just(None), 1 => field(content_type)],
        prop_oneof![1 => Just(None), 1 => field(mode)],
        prop_oneof![9 => Just(None), 1 => json_value().prop_map(Some)],
    )
        .prop_map(|((text, input), content_type, mode, extra)| {
            object(vec![
                ("text", text),
                ("input", input),
                ("content_type", content_type),
                ("mode", mode),
                ("extra", extra),
            ])
        })
}

fn chat_body() -> impl Strategy<Value = Value> + Clone {
    let model = prop_oneof![3 => Just("news-topic".to_string()), 1 => ".{0,20}"].prop_map(Value::from);
    let role = prop_oneof![
        4 => Just(json!("user")),
        2 => prop::sample::select(vec!["system", "assistant"]).prop_map(Value::from),
        1 => ".{0,8}".prop_map(Value::from)
    ];
    let part = (prop_oneof![Just(json!("text")), json_value()], field(some_text().prop_map(Value::from)))
        .prop_map(|(kind, text)| object(vec![("type", Some(kind)), ("text", text)]));
    let content = prop_oneof![
        3 => some_text().prop_map(Value::from),
        1 => vec(part, 0..4).prop_map(Value::Array),
    ];
    let message =
        (field(role), field(content)).prop_map(|(role, content)| object(vec![("role", role), ("content", content)]));
    let stream = prop_oneof![3 => Just(None), 1 => field(any::<bool>().prop_map(Value::from))];
    (field(model), field(vec(message, 0..5).prop_map(Value::Array)), stream).prop_map(|(model, messages, stream)| {
        object(vec![("model", model), ("messages", messages), ("stream", stream), ("temperature", Some(json!(0)))])
    })
}

/// Bytes that print as text, so failing cases can be read.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0.get(..600) {
            Some(start) if self.0.len() > 600 => {
                write!(f, "{:?}… ({} bytes)", String::from_utf8_lossy(start), self.0.len())
            }
            _ => write!(f, "{:?}", String::from_utf8_lossy(&self.0)),
        }
    }
}

/// One request to the server.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    content_type: Option<String>,
    body: Bytes,
}

/// `name`, percent-encoded byte by byte (so invalid UTF-8 and `/` reach the router).
fn encoded(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn call() -> impl Strategy<Value = Call> {
    let content_type = prop_oneof![
        12 => Just(Some("application/json".to_string())),
        2 => Just(Some("application/json; charset=utf-8".to_string())),
        1 => Just(None),
        1 => prop::sample::select(vec!["text/plain", "application/x-www-form-urlencoded", "application/problem+json"])
            .prop_map(|s| Some(s.to_string())),
        1 => "[!-~][ -~]{0,40}".prop_map(Some),
    ];
    let plugin_path = prop_oneof![
        4 => Just("/v1/plugins/news-topic/infer".to_string()),
        1 => vec(any::<u8>(), 0..16).prop_map(|name| format!("/v1/plugins/{}/infer", encoded(&name))),
    ];
    let path_and_body = prop_oneof![
        (plugin_path, body(infer_body())),
        body(chat_body()).prop_map(|body| ("/v1/chat/completions".to_string(), body)),
    ];
    (path_and_body, content_type).prop_map(|((path, body), content_type)| Call {
        path,
        content_type,
        body: Bytes(body),
    })
}

fn client() -> ureq::Agent {
    // A generous bound: the router's own deadline is 3 s, so anything near this is a hang.
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// The property: a 2xx with the documented shape, or a 4xx whose JSON error names the problem.
/// Returns the outcome for the tally.
fn check_reply(call: &Call, status: u16, content_type: &str, body: &[u8]) -> Result<String, TestCaseError> {
    prop_assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "HTTP {status}: {}",
        String::from_utf8_lossy(body)
    );
    prop_assert!(content_type.starts_with("application/json"), "HTTP {status} with content type {content_type:?}");
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!("HTTP {status}, not JSON ({e}): {}", String::from_utf8_lossy(body)))
    })?;
    if status >= 400 {
        let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
        let code = v.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
        prop_assert!(!message.is_empty() && !code.is_empty(), "HTTP {status} without a named problem: {v}");
        // The first words tell the kinds of invalid body apart without listing every position.
        let gist: Vec<&str> = message.split_whitespace().take(3).collect();
        Ok(format!("{status} {code} ({})", gist.join(" ")))
    } else if call.path.ends_with("/infer") {
        prop_assert_eq!(&v["plugin"], "news-topic", "{}", v);
        let source = v["source"].as_str().unwrap_or("");
        prop_assert!(["local", "cloud", "local_fallback"].contains(&source), "{v}");
        prop_assert!(v["reason"].is_string() && v["degraded"].is_boolean() && v["cached"].is_boolean(), "{v}");
        prop_assert!(v.pointer("/latency_ms/total").is_some_and(Value::is_number), "{v}");
        if let Some(c) = v.get("confidence") {
            prop_assert!(c.as_f64().is_some_and(|c| (0.0..=1.0).contains(&c)), "{v}");
        }
        // A fallback says why the cloud did not answer.
        let why = v.pointer("/cloud_error/kind").and_then(Value::as_str).map(|k| format!(" ({k})"));
        Ok(format!("{status} infer {source}{}", why.unwrap_or_default()))
    } else {
        prop_assert_eq!(&v["object"], "chat.completion", "{}", v);
        let content = v.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or("");
        let answer: Result<Answer, _> = serde_json::from_str(content);
        prop_assert!(answer.is_ok_and(|a| a.label.is_some()), "the content is not an answer: {v}");
        let usage = |f: &str| v["usage"][f].as_u64();
        prop_assert!(usage("total_tokens").is_some(), "{v}");
        prop_assert_eq!(
            usage("total_tokens"),
            Some(usage("prompt_tokens").unwrap_or(0) + usage("completion_tokens").unwrap_or(0))
        );
        let source = v.pointer("/edgecascade/source").and_then(Value::as_str);
        prop_assert!(source.is_some(), "{v}");
        Ok(format!("{status} chat {}", source.unwrap_or("")))
    }
}

/// axum's default request body limit, which `serve` keeps.
const BODY_LIMIT: usize = 2 << 20;

/// The server still answers `/healthz` after a case.
fn healthy(agent: &ureq::Agent, api: &Api) -> TestCaseResult {
    // Prompts are recorded by the fake cloud; nothing here reads them.
    api.cloud.requests.lock().unwrap().clear();
    let mut health = agent
        .get(format!("{}/healthz", api.base))
        .call()
        .map_err(|e| TestCaseError::fail(format!("healthz after the call: {e}")))?;
    prop_assert_eq!(health.status().as_u16(), 200);
    let health: Value = health.body_mut().read_json().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&health["status"], "ok");
    Ok(())
}

#[test]
fn the_json_apis_answer_any_body_with_json() {
    let api = api();
    let tally = Tally::default();
    fuzz("serve_json_api", 128, call(), |call| {
        // One agent per case: `/healthz` then goes over the connection the case used, if it is kept alive.
        let agent = client();
        let mut request = agent.post(format!("{}{}", api.base, call.path));
        if let Some(ct) = &call.content_type {
            request = request.header("content-type", ct);
        }
        let mut response = match request.send(&call.body.0[..]) {
            Ok(r) => r,
            // Past the limit the server answers before the body is in and closes; a client
            // that writes the whole body first sees the reset. The server itself must be fine.
            // (The agent may keep that dead connection in its pool, so a fresh one asks.)
            Err(ureq::Error::Io(e)) if call.body.0.len() > BODY_LIMIT => {
                tally.add(format!("over the limit: {:?}", e.kind()));
                return healthy(&client(), api);
            }
            Err(e) => return Err(TestCaseError::fail(format!("no response (hang, drop or panic?): {e}"))),
        };
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = response.body_mut().with_config().limit(16 << 20).read_to_vec();
        let body = body.map_err(|e| TestCaseError::fail(format!("HTTP {status}, the body broke off: {e}")))?;
        tally.add(check_reply(&call, status, &content_type, &body)?);
        healthy(&agent, api)
    });
    tally.print("serve_json_api");
}

// ---- Cloud replies at the HTTP level, through the OpenAI-compatible client ----

/// A response from a fake OpenAI-compatible server.
#[derive(Debug, Clone)]
enum CloudReply {
    /// A well-framed response: status line, headers, a body with the right length.
    Framed { status: u16, content_type: Option<String>, retry_after: Option<String>, body: Bytes },
    /// Anything at all on the wire.
    Raw(Bytes),
}

impl CloudReply {
    fn to_bytes(&self) -> Vec<u8> {
        let Self::Framed { status, content_type, retry_after, body } = self else {
            let Self::Raw(bytes) = self else { unreachable!() };
            return bytes.0.clone();
        };
        let mut head =
            format!("HTTP/1.1 {status} Whatever\r\nconnection: close\r\ncontent-length: {}\r\n", body.0.len());
        if let Some(ct) = content_type {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        if let Some(ra) = retry_after {
            head.push_str(&format!("retry-after: {ra}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body.0);
        bytes
    }
}

fn completion_body() -> impl Strategy<Value = Value> + Clone {
    let count = prop_oneof![
        any::<u32>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        json_value()
    ];
    let content = prop_oneof![3 => ".{0,60}".prop_map(Value::from), 1 => json_value()];
    (field(content), field(count.clone()), field(count), any::<bool>()).prop_map(|(content, prompt, total, empty)| {
        let message = object(vec![("role", Some(json!("assistant"))), ("content", content)]);
        let choices =
            if empty { json!([]) } else { json!([{"index": 0, "message": message, "finish_reason": "stop"}]) };
        let usage =
            object(vec![("prompt_tokens", prompt), ("completion_tokens", Some(json!(1))), ("total_tokens", total)]);
        json!({"id": "x", "object": "chat.completion", "choices": choices, "usage": usage})
    })
}

fn cloud_reply() -> impl Strategy<Value = CloudReply> {
    let status = prop_oneof![6 => Just(200u16), 1 => 100u16..600, 1 => prop::sample::select(vec![204u16, 301, 304, 400, 429, 500, 503])];
    let content_type = prop_oneof![
        6 => Just(Some("application/json".to_string())),
        1 => Just(Some("Application/JSON; charset=utf-8".to_string())),
        1 => Just(None),
        1 => "[!-~][ -~]{0,30}".prop_map(Some),
    ];
    let retry_after = prop_oneof![
        4 => Just(None),
        1 => "[0-9]{1,30}(\\.[0-9]{0,6})?".prop_map(Some),
        1 => "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}".prop_map(Some),
        1 => prop::sample::select(vec!["inf", "NaN", "-0", "1e400", "Wed, 21 Oct 2015 07:28:00 GMT"]).prop_map(|s| Some(s.to_string())),
        1 => "[!-~][ -~]{0,20}".prop_map(Some),
    ];
    let framed = (status, content_type, retry_after, body(completion_body())).prop_map(
        |(status, content_type, retry_after, body)| CloudReply::Framed {
            status,
            content_type,
            retry_after,
            body: Bytes(body),
        },
    );
    let raw_head =
        prop_oneof![Just(String::new()), Just("HTTP/1.1 200 OK\r\n".to_string()), Just("HTTP/1.1 ".to_string())];
    let raw = (raw_head, vec(any::<u8>(), 0..300)).prop_map(|(head, tail)| {
        let mut bytes = head.into_bytes();
        bytes.extend(tail);
        CloudReply::Raw(Bytes(bytes))
    });
    prop_oneof![5 => framed, 1 => raw]
}

/// What the client must make of a framed reply: `Ok(content)` or the error's kind.
fn expected(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<Result<String, &'static str>> {
    if status < 200 || status == 204 || status == 304 {
        return None; // no body by the HTTP rules, or an interim status: any typed error will do
    }
    if (300..400).contains(&status) {
        return Some(Err("redirect"));
    }
    let Ok(text) = std::str::from_utf8(body) else { return Some(Err("bad_reply")) };
    if status == 401 || status == 403 {
        return Some(Err("auth")); // the credentials were refused
    }
    if status >= 400 {
        let status = CloudError::Status { status, retry_after: None, body: String::new() };
        return Some(Err(status.kind()));
    }
    let json = content_type.is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
    let content = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.pointer("/choices/0/message/content").and_then(Value::as_str).map(str::to_string));
    Some(match (json, content) {
        (true, Some(content)) => Ok(content),
        _ => Err("bad_reply"),
    })
}

#[test]
fn cloud_replies_over_http_are_answers_or_typed_errors() {
    let fake = FakeCloud::start(Behaviour::Raw(Vec::new()));
    let request = ChatRequest {
        model: "m".into(),
        messages: vec![edgecascade::ChatMessage { role: edgecascade::Role::User, content: "Shares rose".into() }],
        max_tokens: 8,
        ..Default::default()
    };
    let tally = Tally::default();
    fuzz("openai_http_replies", 256, cloud_reply(), |reply| {
        fake.set(Behaviour::Raw(reply.to_bytes()));
        fake.requests.lock().unwrap().clear();
        // A fresh client each time: no pooled connection carries over from one case to the next.
        let mut config = HttpConfig::new(&fake.url, "EDGECASCADE_TEST_NO_KEY");
        config.read_timeout = Duration::from_secs(5);
        let client = OpenAi::new(config);
        let started = Instant::now();
        let outcome = client.complete(&request, started + Duration::from_secs(5));
        prop_assert!(started.elapsed() < Duration::from_secs(7), "took {:?}", started.elapsed());
        let framing = if matches!(reply, CloudReply::Raw(_)) { "raw" } else { "framed" };
        tally.add(format!("{framing} {}", outcome.as_ref().map_or_else(|e| e.kind(), |_| "ok")));
        let CloudReply::Framed { status, content_type, body, .. } = &reply else { return Ok(()) };
        let got = outcome.as_ref().map(|r| r.content.clone()).map_err(CloudError::kind);
        if let Some(want) = expected(*status, content_type.as_deref(), &body.0) {
            prop_assert_eq!(got, want, "{:?}", outcome);
        } else {
            prop_assert!(outcome.is_err(), "{outcome:?}");
        }
        Ok(())
    });
    tally.print("openai_http_replies");
}
