//! The edge deployment path: a runtime-only host (no Cranelift) built for
//! aarch64 runs under qemu-user, loads a plugin that was precompiled for
//! aarch64 on this x86 machine, and classifies news like the native host.
//!
//! `cargo xtask test` cross-builds that host and the artifact, and passes the
//! binary in `EDGECASCADE_AARCH64_HOST`.

use crate::support::*;
use edgecascade::engine::aot;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ARM: &str = "aarch64-unknown-linux-gnu";

fn arm_host() -> PathBuf {
    let bin = std::env::var_os("EDGECASCADE_AARCH64_HOST")
        .map(PathBuf::from)
        .expect("EDGECASCADE_AARCH64_HOST is not set: run the tests through `cargo xtask test`");
    assert!(bin.is_file(), "{} does not exist", bin.display());
    bin
}

/// The release key xtask signed the aarch64 artifact with (`EDGECASCADE_AARCH64_KEY`).
fn release_key() -> PathBuf {
    let key = std::env::var_os("EDGECASCADE_AARCH64_KEY")
        .map(PathBuf::from)
        .expect("EDGECASCADE_AARCH64_KEY is not set: run the tests through `cargo xtask test`");
    assert!(key.is_file(), "{} does not exist", key.display());
    key
}

/// `--trust KEY.pub` for the release key.
fn trust_flag() -> [String; 2] {
    ["--trust".into(), format!("{}.pub", release_key().display())]
}

/// Runs the aarch64 host under qemu-user, with no module cache.
fn run_arm(args: &[&str]) -> Output {
    Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(arm_host())
        .arg("--no-cache")
        .args(args)
        .output()
        .expect("qemu-aarch64 runs (Debian package qemu-user)")
}

/// A copy of news-topic that holds its signed aarch64 artifact, the package
/// itself signed with the same release key, as a build machine ships it.
fn arm_package(tmp: &Path) -> PathBuf {
    let package = tmp.join("news-topic");
    copy_dir(&plugin("news-topic"), &package);
    let artifact = aot::artifact_path(&package, ARM);
    assert!(artifact.is_file(), "no aarch64 artifact in {}: run `cargo xtask test`", package.display());
    let header = aot::read_header(&artifact).unwrap();
    assert!(header.preinitialized, "xtask precompiles a pre-initialized snapshot");
    assert!(header.signature.is_some(), "xtask signs the artifact");
    let signed = Command::new(bin()).args(["sign", "--key"]).arg(release_key()).arg(&package).output().unwrap();
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    package
}

fn labels(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_runtime_only_aarch64_host_classifies_news_from_a_cross_compiled_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let package = arm_package(tmp.path());
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(repo_root().join("models/data/news/test.jsonl"))
        .unwrap()
        .lines()
        .take(30)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let batch = tmp.path().join("batch.jsonl");
    let lines: Vec<String> = rows.iter().map(|r| serde_json::json!({ "text": r["text"] }).to_string()).collect();
    std::fs::write(&batch, lines.join("\n")).unwrap();

    let (package, batch) = (package.to_str().unwrap(), batch.to_str().unwrap());
    let [trust, key] = trust_flag();
    let out = run_arm(&[&trust, &key, "-v", "run", "--mode", "local", "--plugin", package, "--jsonl", batch]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aarch64 host failed: {stderr}");
    assert!(stderr.contains("precompiled, pre-initialized snapshot"), "{stderr}");
    let arm = labels(&out.stdout);

    // The same answers as this machine's native host, and right on the labelled rows.
    let native = Command::new(bin())
        .args(["run", "--mode", "local", "--plugin"])
        .arg(plugin("news-topic"))
        .arg("--jsonl")
        .arg(batch)
        .output()
        .unwrap();
    assert!(native.status.success());
    assert_eq!(arm, labels(&native.stdout));
    let correct = rows.iter().zip(&arm).filter(|(r, l)| r["label"].as_str() == Some(l.as_str())).count();
    assert!(correct >= 28, "{correct}/30 correct under aarch64");
}

#[test]
fn the_runtime_only_host_runs_native_code_only_when_a_trusted_key_signed_it_or_it_is_told_to() {
    let tmp = tempfile::tempdir().unwrap();
    let package = arm_package(tmp.path());
    let classify = |flags: &[&str]| {
        let text = "The central bank raised interest rates again";
        let run = ["run", "--mode", "local", "--plugin", package.to_str().unwrap(), "--text", text];
        run_arm(&[flags, &run[..]].concat())
    };
    // A default host trusts no key, so nothing vouches for the machine code: it is not run.
    let out = classify(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not trusted") && stderr.contains("--trust-native-code"), "{stderr}");
    // Signed by another key than the one the host trusts: not run either.
    let stranger = tmp.path().join("stranger.key");
    assert!(Command::new(bin()).args(["keygen", "--out"]).arg(&stranger).status().unwrap().success());
    let out = classify(&["--trust", &format!("{}.pub", stranger.display())]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // The embedder's explicit opt-in runs it without a key.
    let out = classify(&["--trust-native-code"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(labels(&out.stdout), ["business"]);
}

#[test]
fn the_runtime_only_host_refuses_what_it_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let package = arm_package(tmp.path());

    // No artifact for its target: it has no compiler to fall back on, and says what to do.
    std::fs::remove_file(aot::artifact_path(&package, ARM)).unwrap();
    let out = run_arm(&["run", "--plugin", package.to_str().unwrap(), "--text", "Shares rose"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("built without a compiler") && stderr.contains("edgecascade compile --target"), "{stderr}");

    // x86 machine code under the aarch64 name: refused by its header, never run.
    let (mut header, body) = aot::read(&aot::artifact_path(&plugin("news-topic"), ARM)).unwrap();
    header.target = "x86_64-unknown-linux-gnu".into();
    write_artifact(&aot::artifact_path(&package, ARM), &header, &body);
    let out = run_arm(&["run", "--plugin", package.to_str().unwrap(), "--text", "Shares rose"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refused") && stderr.contains("target x86_64-unknown-linux-gnu"), "{stderr}");
}
