//! Amazon Bedrock as the cloud tier, through the real binary, against a
//! Converse-shaped server on 127.0.0.1 that checks every SigV4 signature with
//! botocore, AWS's reference signer (`tests/servers/converse_server.py`).

use crate::servers::{AMBIGUOUS, ServeProcess};
use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// What the Converse server answers: not what the local model says of the text,
/// so an answer of `sport` can only have come from Bedrock.
const BEDROCK_ANSWER: &str = "sport";
const ACCESS_KEY: &str = "AKIDEXAMPLE7Q2ZEDGE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEDGEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEDGECASCADEsessiontoken";
const API_KEY: &str = "ABSKQmVkcm9ja0FQSUtleS1lZGdlY2FzY2FkZQ";

/// The Converse server, killed when dropped.
struct Converse {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Converse {
    fn start(args: &[&str]) -> Converse {
        let has_botocore = Command::new("python3").args(["-c", "import botocore"]).status().is_ok_and(|s| s.success());
        assert!(has_botocore, "the `botocore` Python package is needed: pip install botocore (cargo xtask test does)");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/servers/converse_server.py"))
            .args(["--answer", BEDROCK_ANSWER, "--log"])
            .arg(&log)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        let port: u16 = port.trim().parse().unwrap_or_else(|_| panic!("the Converse server printed {port:?}"));
        Converse { child, url: format!("http://127.0.0.1:{port}"), log, _dir: dir }
    }

    /// A server that accepts the test's IAM credentials (with the session token).
    fn sigv4() -> Converse {
        Converse::start(&[
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
            "--session-token",
            SESSION_TOKEN,
            "--region",
            "us-east-1",
        ])
    }

    /// Every request the server received.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Converse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a user with IAM credentials has, and nothing else of AWS's.
fn iam_env(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

const AWS_VARS: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_BEARER_TOKEN_BEDROCK",
];

/// `edgecascade run` on the ambiguous text, escalating everything below certainty to `cloud`.
fn run(cloud: &str, extra: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--plugin"])
        .arg(plugin("news-topic"))
        .args(["--text", AMBIGUOUS, "--threshold", "1", "--cloud", cloud])
        .args(extra)
        .env("EDGECASCADE_CACHE_DIR", cache_dir())
        .env("EDGECASCADE_LOG", "trace");
    for var in AWS_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v))).output().unwrap()
}

fn reply(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, &stderr[stderr.len().saturating_sub(4000)..]);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET_KEY, SESSION_TOKEN, API_KEY] {
        assert!(!text.contains(secret), "{what} contains a secret ({secret})");
    }
}

#[test]
fn run_escalates_to_nova_pro_with_a_sigv4_signature_that_botocore_accepts() {
    let converse = Converse::sigv4();
    let log_dir = tempfile::tempdir().unwrap();
    let logs = log_dir.path().to_str().unwrap();
    let out = run(
        &converse.url,
        &["--api", "bedrock", "--cloud-model", "amazon.nova-pro-v1:0", "--escalation-log", logs],
        &iam_env(SECRET_KEY),
    );
    let answer = reply(&out);
    assert_eq!(
        (answer["source"].as_str(), answer["label"].as_str()),
        (Some("cloud"), Some(BEDROCK_ANSWER)),
        "{answer}"
    );
    assert_eq!(answer["reason"], "low_confidence");
    assert_eq!(answer["tokens"]["total_tokens"], 33, "usage is mapped from Converse's inputTokens/outputTokens");

    let requests = converse.requests();
    let last = requests.last().expect("the server was called");
    assert_eq!(last["auth"], "ok", "botocore recomputed the same signature: {last}");
    assert_eq!(last["model"], "amazon.nova-pro-v1:0");
    assert!(last["path"].as_str().unwrap().contains("amazon.nova-pro-v1%3A0"), "{}", last["path"]);
    assert_eq!(last["headers"]["x-amz-security-token"], SESSION_TOKEN, "the session token is sent");
    let body: Value = serde_json::from_str(last["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["inferenceConfig"]["temperature"], 0);
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(body["messages"][0]["content"][0]["text"].as_str().unwrap().contains("digital tax"));
    let metadata = &body["requestMetadata"];
    assert_eq!(
        (metadata["plugin"].as_str(), metadata["reason"].as_str()),
        (Some("news-topic"), Some("low_confidence"))
    );
    assert!(metadata["plugin_version"].is_string(), "{metadata}");

    // Secrets reach neither the trace-level log nor the escalation log.
    assert_no_secret("stderr at trace level", &String::from_utf8_lossy(&out.stderr));
    assert_no_secret("stdout", &String::from_utf8_lossy(&out.stdout));
    let mut logged = 0;
    for entry in walk(log_dir.path()) {
        logged += 1;
        assert_no_secret(&entry.display().to_string(), &String::from_utf8_lossy(&std::fs::read(&entry).unwrap()));
    }
    assert!(logged > 0, "the escalation was logged");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn a_wrong_secret_is_refused_and_the_local_answer_stands_in_naming_the_auth_error() {
    let converse = Converse::sigv4();
    let out = run(
        &converse.url,
        &["--api", "bedrock", "--cloud-model", "amazon.nova-micro-v1:0"],
        &iam_env("wJalrXUtnFEMI/K7MDENG+bPxRfiCYnotTHEkey"),
    );
    let answer = reply(&out);
    assert_eq!(
        (answer["source"].as_str(), answer["degraded"].as_bool()),
        (Some("local_fallback"), Some(true)),
        "{answer}"
    );
    assert_ne!(answer["label"], BEDROCK_ANSWER, "the local model answered");
    assert_eq!(answer["cloud_error"]["kind"], "auth", "{answer}");
    let message = answer["cloud_error"]["message"].as_str().unwrap();
    assert!(message.contains("InvalidSignatureException") && message.contains("403"), "{message}");
    let requests = converse.requests();
    assert_eq!(requests.len(), 1, "a refused credential is not retried");
    assert_ne!(requests[0]["auth"], "ok");
}

#[test]
fn bedrock_api_keys_are_bearer_tokens_and_win_over_iam_credentials() {
    let converse = Converse::start(&["--api-key", API_KEY]);
    let mut env = iam_env(SECRET_KEY);
    env.push(("AWS_BEARER_TOKEN_BEDROCK", API_KEY.into()));
    let answer = reply(&run(&converse.url, &["--api", "bedrock", "--cloud-model", "amazon.nova-lite-v1:0"], &env));
    assert_eq!(answer["source"], "cloud", "{answer}");
    let request = converse.requests().pop().unwrap();
    assert_eq!(request["auth"], "ok");
    assert!(request["headers"].get("x-amz-date").is_none(), "a bearer request is not also signed");

    let wrong = vec![("AWS_BEARER_TOKEN_BEDROCK", "ABSKnotTheKey".to_string())];
    let answer = reply(&run(&converse.url, &["--api", "bedrock", "--cloud-model", "amazon.nova-lite-v1:0"], &wrong));
    assert_eq!(
        (answer["source"].as_str(), answer["cloud_error"]["kind"].as_str()),
        (Some("local_fallback"), Some("auth"))
    );
}

#[test]
fn missing_credentials_are_a_setup_error_that_says_what_to_set() {
    let out = run("http://127.0.0.1:9", &["--api", "bedrock"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AWS_BEARER_TOKEN_BEDROCK") && stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
    // IAM credentials for an endpoint whose host names no region, and no AWS_REGION.
    let env = vec![("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into())];
    let out = run("http://127.0.0.1:9", &["--api", "bedrock"], &env);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_REGION"));
}

#[test]
fn a_device_escalates_through_a_gateway_tier_to_bedrock() {
    let converse = Converse::sigv4();
    let gateway_env = iam_env(SECRET_KEY);
    let news = plugin("news-topic");
    let gateway = ServeProcess::start_with_env(
        [
            "--plugin",
            news.to_str().unwrap(),
            "--threshold",
            "1",
            "--api",
            "bedrock",
            "--cloud",
            &converse.url,
            "--cloud-model",
            "us.amazon.nova-pro-v1:0",
        ],
        &gateway_env,
    );
    // The device holds no AWS credentials: only the gateway does.
    let answer = reply(&run(&format!("{}/v1", gateway.base), &["--cloud-model", "news-topic"], &[]));
    assert_eq!(
        (answer["source"].as_str(), answer["label"].as_str()),
        (Some("cloud"), Some(BEDROCK_ANSWER)),
        "{answer}"
    );
    let request = converse.requests().pop().expect("the gateway escalated to Bedrock");
    assert_eq!((request["auth"].as_str(), request["model"].as_str()), (Some("ok"), Some("us.amazon.nova-pro-v1:0")));
}

/// The distillation loop with a Bedrock teacher: Converse returns no
/// log-probabilities, so the loop learns from hard labels, and still runs its
/// rounds. The Converse server's answers come from the real sentiment teacher.
#[test]
fn the_distillation_loop_learns_from_a_bedrock_teacher_with_hard_labels() {
    let teacher = ServeProcess::start([std::ffi::OsString::from("--plugin"), plugin("sentiment-teacher").into()]);
    let converse = Converse::start(&["--api-key", API_KEY, "--teacher", &format!("{}/v1", teacher.base)]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = crate::distill::cold_start_command(tmp.path(), 1, 200);
    cmd.args(["--api", "bedrock", "--cloud", &converse.url, "--cloud-model", "sentiment-teacher"]);
    for var in AWS_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.env("AWS_BEARER_TOKEN_BEDROCK", API_KEY).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json = &stdout[stdout.find("\n{").expect("the JSON report") + 1..];
    let report: Value = serde_json::from_str(json).unwrap();
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "the cold start and one round: {json}");
    let log: Vec<Value> = std::fs::read_to_string(tmp.path().join("work/logs/round-1.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!log.is_empty(), "round 1 escalated and logged");
    assert_eq!(log.len() as u64, rounds[1]["served"]["logged"].as_u64().unwrap());
    for record in &log {
        assert_eq!(record["teacher"], "sentiment-teacher", "{record}");
        assert_ne!(record["soft"], true, "Converse gives no logprobs, so no soft labels: {record}");
        assert!(record["label"].is_string(), "{record}");
    }
    let requests = converse.requests();
    assert!(requests.len() >= log.len() && requests.iter().all(|r| r["auth"] == "ok"));
}
