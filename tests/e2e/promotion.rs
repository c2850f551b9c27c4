//! Shadow evaluation and the promotion gate: `serve --shadow`, `promote`, and
//! `serve --watch` picking up a promoted version, over real HTTP on 127.0.0.1.

use crate::servers::*;
use crate::support::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Rows of the sentiment test split used as the labelled check.
const CHECK_ROWS: usize = 60;

fn check_set() -> PathBuf {
    repo_root().join("models/data/sentiment/test.jsonl")
}

fn check_texts(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(check_set()).unwrap();
    let rows = text.lines().take(n).map(|l| edgecascade::eval::Row::from_json_line(l).unwrap());
    rows.map(|r| r.input.as_text().unwrap().to_string()).collect()
}

/// A copy of the package `from` in `to` (a live deployment the test may change).
fn copy_package(from: &Path, to: &Path) -> PathBuf {
    copy_dir(from, to);
    to.to_path_buf()
}

/// `from` packed again as `version`, with `threshold` when given: same module and models.
fn repack(from: &Path, out: &Path, version: &str, threshold: Option<f32>) -> PathBuf {
    repack_with(from, out, |m| {
        m.plugin.version = version.to_string();
        if let Some(t) = threshold {
            m.policy.threshold = t;
        }
    })
}

/// `from` packed again into `out` after `edit` changes its manifest.
fn repack_with(from: &Path, out: &Path, edit: impl FnOnce(&mut edgecascade::Manifest)) -> PathBuf {
    let mut manifest = edgecascade::Manifest::read(from).unwrap();
    edit(&mut manifest);
    let template_dir = out.with_extension("template");
    std::fs::create_dir_all(&template_dir).unwrap();
    let template = template_dir.join("plugin.toml");
    std::fs::write(&template, manifest.to_toml()).unwrap();
    edgecascade::plugin::pack(&template, &[from.to_path_buf()], out).unwrap();
    out.to_path_buf()
}

/// Every file of a directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// `edgecascade promote` against the real tier; returns (exit code, parsed --json stdout, stderr).
fn promote(live: &Path, candidate: &Path) -> (Option<i32>, serde_json::Value, String) {
    let out = std::process::Command::new(bin())
        .args(["promote", "--json", "--limit", &CHECK_ROWS.to_string(), "--live"])
        .arg(live)
        .arg("--candidate")
        .arg(candidate)
        .arg("--check")
        .arg(check_set())
        .args(["--cloud", &tier().url, "--deadline", "120s", "--cloud-timeout", "120s"])
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, stderr)
}

fn infer(base: &str, text: &str) -> Result<serde_json::Value, String> {
    let mut resp = ureq::post(format!("{base}/v1/plugins/sentiment/infer"))
        .send_json(serde_json::json!({"text": text, "mode": "local_only"}))
        .map_err(|e| e.to_string())?;
    let reply: serde_json::Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
    if reply["label"].is_string() { Ok(reply) } else { Err(format!("no label: {reply}")) }
}

fn metric(base: &str, line_prefix: &str) -> Option<u64> {
    let text = ureq::get(format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    text.lines().find_map(|l| l.strip_prefix(line_prefix)).map(|v| v.trim().parse().unwrap())
}

#[test]
fn a_shadow_candidate_is_counted_in_metrics_while_the_live_version_answers() {
    // A candidate that behaves differently: the same model reading only the first 3 tokens.
    let tmp = tempfile::tempdir().unwrap();
    let shadow = repack_with(&plugin("sentiment"), &tmp.path().join("sentiment-1.1.0"), |m| {
        m.plugin.version = "1.1.0".into();
        m.config.insert("max_tokens".into(), 3.into());
    });

    let args: [OsString; 4] = ["--plugin".into(), plugin("sentiment").into(), "--shadow".into(), shadow.clone().into()];
    let server = ServeProcess::start(args);
    let (live, candidate) = (loaded("sentiment"), runtime().load(&shadow).unwrap());
    let texts = check_texts(CHECK_ROWS);
    let mut disagreements = 0;
    for text in &texts {
        let reply = infer(&server.base, text).unwrap();
        assert_eq!(reply["version"], "1.0.0", "the live version answers: {reply}");
        let live_label = label(&live.infer(&edgecascade::Input::text(text.as_str())).unwrap()).to_string();
        assert_eq!(reply["label"], live_label.as_str(), "{text}");
        let shadow_label = label(&candidate.infer(&edgecascade::Input::text(text.as_str())).unwrap()).to_string();
        disagreements += (shadow_label != live_label) as u64;
    }
    assert!(disagreements > 0, "the two models should disagree somewhere in {} rows", texts.len());
    let labels = "{plugin=\"sentiment\",candidate=\"1.1.0\"}";
    assert_eq!(metric(&server.base, &format!("edgecascade_shadow_compared_total{labels} ")), Some(texts.len() as u64));
    assert_eq!(metric(&server.base, &format!("edgecascade_shadow_disagreements_total{labels} ")), Some(disagreements));
    assert!(server.stop().success());
}

#[test]
fn promote_refuses_a_worse_candidate_and_leaves_the_live_package_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let live = copy_package(&plugin("sentiment"), &tmp.path().join("live/sentiment"));
    // Threshold 0 keeps every answer local: the cascade loses what the cloud fixed.
    let worse = repack(&plugin("sentiment"), &tmp.path().join("sentiment-1.0.1"), "1.0.1", Some(0.0));
    let before = snapshot(&live);
    let modified = std::fs::metadata(live.join("plugin.toml")).unwrap().modified().unwrap();

    let (code, out, stderr) = promote(&live, &worse);
    assert_eq!(code, Some(1), "refused is exit 1: {stderr}");
    assert!(stderr.contains("refused") && stderr.contains("unchanged"), "{stderr}");
    assert_eq!(out["promoted"], false);
    let report = &out["report"];
    assert_eq!(report["verdict"]["decision"], "refuse", "{out}");
    assert_eq!(report["candidate"]["summary"]["local_share"], 1.0);
    let (l, c) = (&report["live"]["summary"]["cascade_accuracy"], &report["candidate"]["summary"]["cascade_accuracy"]);
    assert!(c.as_f64().unwrap() < l.as_f64().unwrap(), "{out}");

    assert!(snapshot(&live) == before, "the live package is byte-for-byte unchanged (and no files were added)");
    assert_eq!(std::fs::metadata(live.join("plugin.toml")).unwrap().modified().unwrap(), modified);
}

#[test]
fn promote_refuses_another_plugin_before_evaluating() {
    let out = std::process::Command::new(bin())
        .args(["promote", "--live"])
        .arg(plugin("sentiment"))
        .arg("--candidate")
        .arg(plugin("news-topic"))
        .arg("--check")
        .arg(check_set())
        .args(["--cloud", &refused_url()])
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another plugin"), "{stderr}");
}

#[test]
fn a_promoted_candidate_is_hot_reloaded_with_no_failed_request() {
    let tmp = tempfile::tempdir().unwrap();
    let live = copy_package(&plugin("sentiment"), &tmp.path().join("live/sentiment"));
    // The same model under a new version: no worse, by construction.
    let candidate = repack(&plugin("sentiment"), &tmp.path().join("sentiment-1.0.1"), "1.0.1", None);
    let args: [OsString; 7] = [
        "--plugin".into(),
        live.clone().into(),
        "--shadow".into(),
        candidate.clone().into(),
        "--watch".into(),
        "--watch-interval".into(),
        "100ms".into(),
    ];
    let server = ServeProcess::start(args);

    // Traffic throughout: every request must get an answer.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (base, stop) = (server.base.clone(), stop.clone());
        let texts = check_texts(5);
        std::thread::spawn(move || {
            let (mut versions, mut failures) = (Vec::<String>::new(), Vec::new());
            for text in texts.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match infer(&base, text) {
                    Ok(reply) => versions.push(reply["version"].as_str().unwrap().to_string()),
                    Err(e) => failures.push(e),
                }
            }
            (versions, failures)
        })
    };

    let (code, out, stderr) = promote(&live, &candidate);
    assert_eq!(code, Some(0), "promoted is exit 0: {stderr}\n{out}");
    assert_eq!(out["promoted"], true);
    assert!(stderr.contains("promoted"), "{stderr}");
    let installed = edgecascade::Package::open(&live).unwrap().verify().unwrap();
    assert_eq!(installed.manifest().plugin.version, "1.0.1");

    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = &check_texts(1)[0];
    while infer(&server.base, probe).unwrap()["version"] != "1.0.1" {
        assert!(Instant::now() < deadline, "serve --watch did not swap to 1.0.1");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once 1.0.1 serves, the shadow (also 1.0.1) is dropped: the comparisons stop
    // (after any request that began on the old version has finished).
    std::thread::sleep(Duration::from_millis(300));
    let compared = "edgecascade_shadow_compared_total{plugin=\"sentiment\",candidate=\"1.0.1\"} ";
    let after_swap = metric(&server.base, compared).expect("the shadow compared requests before the swap");
    assert!(after_swap > 0);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (versions, failures) = traffic.join().unwrap();
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), versions.len());
    assert_eq!(metric(&server.base, compared), Some(after_swap), "no comparisons after the swap");
    let disagreements = "edgecascade_shadow_disagreements_total{plugin=\"sentiment\",candidate=\"1.0.1\"} ";
    assert_eq!(metric(&server.base, disagreements), Some(0), "the same model never disagrees");
    let first_new = versions.iter().position(|v| v == "1.0.1").expect("traffic saw the new version");
    assert!(first_new > 0 && versions[..first_new].iter().all(|v| v == "1.0.0"), "old, then new: {versions:?}");
    assert!(versions[first_new..].iter().all(|v| v == "1.0.1"), "never back to the old version");
    assert!(server.stop().success());
}
