//! The C API: the committed header is what cbindgen generates, and a C program
//! compiled with the system's cc loads a real plugin and routes real requests.

use crate::servers::{Behaviour, FakeCloud};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Compiles capi/examples/classify.c against the release cdylib.
fn classify_program(tmp: &Path) -> PathBuf {
    let lib_dir = Path::new(bin()).parent().unwrap();
    assert!(lib_dir.join("libedgecascade_capi.so").is_file(), "build the workspace: `cargo xtask test`");
    let root = repo_root();
    let exe = tmp.join("classify");
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(root.join("capi/include"))
        .arg(root.join("capi/examples/classify.c"))
        .arg("-L")
        .arg(lib_dir)
        .arg("-ledgecascade_capi")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

fn classify(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe).args(args).env("EDGECASCADE_CACHE_DIR", cache_dir()).output().unwrap()
}

fn rows(out: &Output) -> Vec<Vec<String>> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(String::from).collect()).collect()
}

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    // The capi build script regenerates the header; a stale commit shows up as a diff.
    let tracked = Command::new("git")
        .args(["ls-files", "--error-unmatch", "capi/include/edgecascade.h"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(tracked.status.success(), "capi/include/edgecascade.h is not committed");
    let out = Command::new("git")
        .args(["diff", "--exit-code", "--", "capi/include/edgecascade.h"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "regenerated header differs from the committed one:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let header = std::fs::read_to_string(repo_root().join("capi/include/edgecascade.h")).unwrap();
    for item in
        ["ec_runtime_new", "ec_plugin_load", "ec_cascade_infer", "ec_reply_source", "ec_last_error", "Ownership"]
    {
        assert!(header.contains(item), "{item} missing from the header");
    }
}

#[test]
fn a_c_program_routes_locally_and_to_the_cloud_with_source_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = classify_program(tmp.path());
    let news = plugin("news-topic");
    let news = news.to_str().unwrap();

    let out = classify(&exe, &[news, "The central bank raised interest rates as inflation rose", "Qx"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = rows(&out);
    assert_eq!(lines[0][0], "business");
    assert_eq!(lines[0][2..4], ["local", "confident"]);
    // No cloud configured: an input beyond the plugin has no one to go to.
    assert_eq!(lines[1][2..4], ["local", "no_cloud"]);

    // With a cloud (an OpenAI-compatible server on 127.0.0.1) the same input escalates, and the
    // plugin reads the large model's reply into the same answer shape.
    let cloud = FakeCloud::start(Behaviour::Reply("tech".into()));
    let out = classify(&exe, &[news, "--cloud", &cloud.url, "Qx"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows(&out)[0], ["tech", "1.000", "cloud", "beyond"]);
    assert_eq!(cloud.hits(), 1);

    // A dead cloud: the reply still comes back, marked degraded (here with no label: the input was beyond the plugin).
    let out = classify(&exe, &[news, "--cloud", &crate::servers::refused_url(), "Qx"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows(&out)[0], ["-", "0.000", "local_fallback", "beyond", "degraded"]);
}

#[test]
fn c_callers_get_a_status_and_a_message_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = classify_program(tmp.path());
    let missing = tmp.path().join("no-such-plugin");
    let out = classify(&exe, &[missing.to_str().unwrap(), "hello"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // EC_STATUS_IO = 2, and the message names the file.
    assert!(stderr.starts_with("error 2: ") && stderr.contains("no-such-plugin"), "{stderr}");

    let bad = make_package(tmp.path(), wat_manifest(), &[("m.wasm", b"\0asm\x01\0\0\0garbage")]);
    let out = classify(&exe, &[bad.to_str().unwrap(), "hello"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // EC_STATUS_BAD_PLUGIN = 4.
    assert!(stderr.starts_with("error 4: ") && stderr.contains("invalid wasm"), "{stderr}");
}

#[test]
fn a_c_host_runs_native_code_only_when_signed_by_a_trusted_key_or_told_to() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = classify_program(tmp.path());
    let package = tmp.path().join("news-topic");
    copy_dir(&plugin("news-topic"), &package);
    forge_unsigned_artifact(&package);
    let package = package.to_str().unwrap();
    let text = "The central bank raised interest rates as inflation rose";

    // Default options: the unsigned artifact is passed over, and the wasm answers.
    let out = classify(&exe, &[package, text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows(&out)[0][0], "business");

    // Opting in makes the library deserialize it, which fails on the forged body
    // (EC_STATUS_BAD_PLUGIN = 4): so the default run above did not execute it.
    let out = classify(&exe, &[package, "--trust-native-code", text]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error 4: ") && stderr.contains("wasmtime"), "{stderr}");

    // A trusted key: the package must be signed by it (EC_STATUS_BAD_PACKAGE = 3 when not).
    let (_, public) = edgecascade::plugin::keygen().unwrap();
    let out = classify(&exe, &[package, "--trust", &public, text]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error 3: ") && stderr.contains("not signed"), "{stderr}");
    let out = classify(&exe, &[package, "--trust", "not-a-key", text]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an ed25519 public key"));
}
