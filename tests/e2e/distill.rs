//! The distillation loop and what feeds it: soft labels in the escalation
//! log, audit samples, the one routing decision shared by the router and
//! eval, and a CI-sized cold start of `edgecascade distill` against a real
//! teacher tier (`edgecascade serve` with `sentiment-teacher`) and the real
//! trainer (`models/pipeline/distill.py`).

use crate::servers::*;
use crate::support::*;
use edgecascade::cloud::{HttpConfig, OpenAi, Resilient, RetryPolicy};
use edgecascade::eval::{self, Row};
use edgecascade::router::EscalationLog;
use edgecascade::{CascadeConfig, Metrics, Mode, Reason, Router, Source};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn openai(url: &str, logprobs: u8) -> Arc<Resilient<OpenAi>> {
    let mut config = HttpConfig::new(url, "EDGECASCADE_TEST_NO_KEY");
    config.read_timeout = Duration::from_secs(60);
    let policy = RetryPolicy { attempts: 1, ..Default::default() };
    Arc::new(Resilient::new(OpenAi::new(config).with_logprobs(logprobs), policy))
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn sentiment_rows(file: &str, n: usize) -> Vec<Row> {
    let text = std::fs::read_to_string(repo_root().join("models/data/sentiment").join(file)).unwrap();
    text.lines().take(n).map(|l| Row::from_json_line(l).unwrap()).collect()
}

#[test]
fn the_tiers_scores_are_logged_as_a_soft_label_with_a_versioned_record() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = loaded("sentiment");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.threshold = 1.0;
    config.deadline = Duration::from_secs(60);
    config.cloud_model = "sentiment-large".into();
    let router = Router::new(plugin, Some(openai(&tier().url, 0)), config, Metrics::default())
        .with_log(EscalationLog::open(tmp.path().join("log.jsonl")).unwrap());
    let reply = router.route(&text("the flight was delayed again and nobody told us anything"), Mode::Auto);
    assert_eq!(reply.source, Source::Cloud, "{reply:?}");
    let lines = log_lines(&tmp.path().join("log.jsonl"));
    let record = &lines[0];
    assert_eq!(record["record"], edgecascade::router::RECORD_VERSION);
    assert_eq!(record["id"].as_str().unwrap().len(), 32);
    assert_eq!((record["soft"].as_bool(), record["teacher"].as_str()), (Some(true), Some("sentiment-large")));
    let scores = record["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3, "{record}");
    let total: f64 = scores.iter().map(|s| s["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-3, "{record}");
    assert_eq!(scores[0]["label"], record["label"]);
}

#[test]
fn openai_logprobs_become_a_distribution_over_the_labels() {
    let body = serde_json::json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "negative"}, "finish_reason": "stop",
                     "logprobs": {"content": [{"token": "negative", "logprob": -0.2231, "top_logprobs": [
                         {"token": "negative", "logprob": -0.2231}, {"token": "neutral", "logprob": -1.6094},
                         {"token": " pos", "logprob": -4.6052}, {"token": "The", "logprob": -6.0}]}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let fake = FakeCloud::start(Behaviour::Raw(response.into_bytes()));
    let tmp = tempfile::tempdir().unwrap();
    let plugin = loaded("sentiment");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.threshold = 1.0;
    let router = Router::new(plugin, Some(openai(&fake.url, 5)), config, Metrics::default())
        .with_log(EscalationLog::open(tmp.path().join("log.jsonl")).unwrap());
    let reply = router.route(&text("worst service ever"), Mode::Auto);
    assert_eq!(reply.source, Source::Cloud, "{reply:?}");
    let sent = fake.requests.lock().unwrap().join("\n");
    assert!(sent.contains("\"logprobs\":true") && sent.contains("\"top_logprobs\":5"), "{sent}");
    let answer = reply.answer.unwrap();
    // 0.80, 0.20 and 0.01 of mass on the three labels ("The" fits none), normalised.
    assert_eq!(answer.label.as_deref(), Some("negative"));
    assert!((answer.confidence - 0.80 / 1.01).abs() < 2e-3, "{answer:?}");
    let record = &log_lines(&tmp.path().join("log.jsonl"))[0];
    assert_eq!(record["soft"], true, "{record}");
    assert_eq!(record["scores"].as_array().unwrap().len(), 3);

    // Without logprobs the same reply is a hard label, and the log says so.
    let fake = FakeCloud::start(Behaviour::Reply("negative".into()));
    let plugin = loaded("sentiment");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.threshold = 1.0;
    let router = Router::new(plugin, Some(openai(&fake.url, 0)), config, Metrics::default())
        .with_log(EscalationLog::open(tmp.path().join("hard.jsonl")).unwrap());
    router.route(&text("worst service ever"), Mode::Auto);
    assert!(!fake.requests.lock().unwrap().join("\n").contains("logprobs"));
    let record = &log_lines(&tmp.path().join("hard.jsonl"))[0];
    assert_eq!((record["soft"].as_bool(), record["scores"].as_array().unwrap().len()), (Some(false), 1));
}

#[test]
fn audit_samples_are_logged_and_their_agreement_is_in_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = loaded("sentiment");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.threshold = 0.0; // everything is confident: only audits reach the cloud
    config.audit_rate = 1.0;
    config.deadline = Duration::from_secs(60);
    config.cloud_model = "sentiment-large".into();
    let metrics = Metrics::default();
    let router = Router::new(plugin, Some(openai(&tier().url, 0)), config, metrics.clone())
        .with_log(EscalationLog::open(tmp.path().join("log.jsonl")).unwrap());
    let rows = sentiment_rows("test.jsonl", 12);
    let mut agreed = 0;
    for row in &rows {
        let reply = router.route(&row.input, Mode::Auto);
        assert_eq!((reply.source, reply.reason, reply.audited), (Source::Local, Reason::Confident, true), "{reply:?}");
        let local = reply.answer.and_then(|a| a.label);
        let cloud = loaded("sentiment-large").infer(&row.input).unwrap();
        agreed += usize::from(local.as_deref() == Some(label(&cloud)));
    }
    let lines = log_lines(&tmp.path().join("log.jsonl"));
    assert_eq!(lines.len(), rows.len());
    assert!(lines.iter().all(|l| l["reason"] == "audit" && l["local_label"].is_string()));
    let text = metrics.render();
    assert!(text.contains(&format!("edgecascade_audits_total{{plugin=\"sentiment\"}} {}", rows.len())), "{text}");
    assert!(text.contains(&format!("edgecascade_audit_agreements_total{{plugin=\"sentiment\"}} {agreed}")), "{text}");

    // Rate 0 (the default) audits nothing.
    let plugin = loaded("sentiment");
    let mut config = CascadeConfig::for_plugin(&plugin);
    config.threshold = 0.0;
    let fake = FakeCloud::start(Behaviour::Reply("negative".into()));
    let router = Router::new(plugin, Some(openai(&fake.url, 0)), config, Metrics::default());
    assert!(!router.route(&rows[0].input, Mode::Auto).audited);
    assert_eq!(fake.hits(), 0);
}

#[test]
fn eval_and_the_router_make_the_same_decision_for_every_reason() {
    // A plugin whose answers carry a confidence but no label (like the tensor plugin):
    // the router keeps them local when confident, and eval must count them local too.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(1, ""))]);
    let fake = FakeCloud::start(Behaviour::Reply("{\"confidence\":0.9}".into()));
    let cloud = openai(&fake.url, 0);
    for threshold in [0.3, 0.5, 0.7] {
        let plugin = runtime().load(&pkg).unwrap();
        let mut config = CascadeConfig::for_plugin(&plugin);
        config.threshold = threshold;
        config.cache_entries = 0;
        let router = Router::new(plugin, Some(cloud.clone()), config, Metrics::default());
        let rows = vec![Row { input: text("anything"), label: "x".into() }];
        let obs = eval::observe(&router, &rows, 1, || {});
        let reply = router.route(&rows[0].input, Mode::Auto);
        assert_eq!(obs[0].local_at(threshold), reply.source == Source::Local, "threshold {threshold}: {reply:?}");
        assert_eq!(reply.reason == Reason::Confident, threshold <= 0.5);
        let summary = eval::summarize(&obs, threshold);
        assert_eq!(summary.local_share, if threshold <= 0.5 { 1.0 } else { 0.0 });
    }
    // Beyond and local errors escalate in both.
    let sentiment = loaded("sentiment");
    let config = CascadeConfig::for_plugin(&sentiment);
    let router = Router::new(sentiment, Some(openai(&tier().url, 0)), config, Metrics::default());
    for input in [edgecascade::Input::new("image/png", vec![0u8; 4]), text("")] {
        let reply = router.route(&input, Mode::Auto);
        let obs = eval::observe(&router, &[Row { input: input.clone(), label: "neutral".into() }], 1, || {});
        assert_eq!(obs[0].local_at(0.72), reply.source == Source::Local, "{reply:?} / {:?}", obs[0]);
    }
}

/// `edgecascade distill` on a copy of the sentiment loop data: a cold start, then
/// `rounds` rounds over the first `requests` stream rows, in `tmp`. The caller adds the cloud.
pub fn cold_start_command(tmp: &Path, rounds: u32, requests: usize) -> std::process::Command {
    let live = tmp.join("live/sentiment");
    copy_dir(&plugin("sentiment"), &live);
    let stream = tmp.join("stream.jsonl");
    let loop_dir = repo_root().join("models/data/sentiment/loop");
    let rows: Vec<String> = std::fs::read_to_string(loop_dir.join("stream.jsonl"))
        .unwrap()
        .lines()
        .take(requests)
        .map(str::to_string)
        .collect();
    std::fs::write(&stream, rows.join("\n") + "\n").unwrap();
    let trainer = format!("python3 {} --task sentiment", repo_root().join("models/pipeline/distill.py").display());
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("distill")
        .arg("--plugin")
        .arg(&live)
        .arg("--seed")
        .arg(loop_dir.join("seed.jsonl"))
        .arg("--check")
        .arg(loop_dir.join("check.jsonl"))
        .arg("--stream")
        .arg(&stream)
        .args(["--rounds", &rounds.to_string(), "--cold-start", "--json", "--trainer", &trainer])
        .args(["--deadline", "60s", "--cloud-timeout", "60s"])
        .arg("--work")
        .arg(tmp.join("work"))
        .env("EDGECASCADE_CACHE_DIR", cache_dir());
    cmd
}

/// A CI-sized cold start: 300 gold tweets, 2 rounds over 800 stream requests.
#[test]
fn a_cold_start_loop_serves_more_locally_in_its_second_round() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live/sentiment");
    let teacher = ServeProcess::start([std::ffi::OsString::from("--plugin"), plugin("sentiment-teacher").into()]);
    let out = cold_start_command(tmp.path(), 2, 800)
        .args(["--cloud", &format!("{}/v1", teacher.base), "--cloud-model", "sentiment-teacher"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json = &stdout[stdout.find("\n{").expect("the JSON report") + 1..];
    let report: serde_json::Value = serde_json::from_str(json).unwrap();
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{json}");
    let served_local =
        |r: &serde_json::Value| r["served"]["local"].as_f64().unwrap() / r["served"]["requests"].as_f64().unwrap();
    assert_eq!(rounds[2]["verdict"]["decision"], "promote", "{stdout}");
    assert!(served_local(&rounds[2]) > served_local(&rounds[1]), "{stdout}");
    // Every promoted version keeps the calibrated share of the teacher's accuracy on the check set.
    for r in rounds {
        let s = &r["check"]["summary"];
        let (cascade, teacher) = (s["cascade_accuracy"].as_f64().unwrap(), s["cloud_accuracy"].as_f64().unwrap());
        assert!(cascade >= 0.99 * teacher, "round {}: {cascade} against {teacher}", r["round"]);
    }
    // The live directory holds the last promoted version, and the logs are soft-labelled v2 records.
    let manifest = edgecascade::Manifest::read(&live).unwrap();
    assert_eq!(manifest.plugin.version, rounds[2]["version"].as_str().unwrap());
    let log = log_lines(&tmp.path().join("work/logs/round-1.jsonl"));
    assert_eq!(log.len() as u64, rounds[1]["served"]["logged"].as_u64().unwrap());
    assert!(!log.is_empty() && log.iter().all(|l| l["soft"] == true && l["teacher"] == "sentiment-teacher"));
    assert!(tmp.path().join("work/candidates").join(format!("sentiment-{}", manifest.plugin.version)).is_dir());
}

#[test]
fn distill_says_up_front_when_the_trainer_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let loop_dir = repo_root().join("models/data/sentiment/loop");
    let out = std::process::Command::new(bin())
        .arg("distill")
        .arg("--plugin")
        .arg(plugin("sentiment"))
        .arg("--seed")
        .arg(loop_dir.join("seed.jsonl"))
        .arg("--check")
        .arg(loop_dir.join("check.jsonl"))
        .arg("--stream")
        .arg(loop_dir.join("stream.jsonl"))
        .args(["--cloud", &refused_url(), "--trainer", "edgecascade-no-such-trainer --task sentiment"])
        .arg("--work")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("edgecascade-no-such-trainer") && stderr.contains("cannot start"), "{stderr}");
    assert!(stderr.contains("models/setup.sh"), "{stderr}");
}
