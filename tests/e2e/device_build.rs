//! What a device build carries: the library without its default features (as
//! a device app embeds it) and the C library without a compiler hold no web
//! server and no async runtime (the sandbox's WASI is the host's own, synchronous).

use std::process::Command;

/// `cargo tree` over normal dependencies, offline, with `args`.
fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["tree", "--offline", "--locked", "-e", "normal", "--format", "{p}"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first word of each line, after the tree's drawing.
fn names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|l| l.trim_start_matches(|c: char| !c.is_alphanumeric()).split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The crates in the tree of a build.
fn crates(build: &[&str]) -> Vec<String> {
    names(&cargo_tree(&[&["--prefix", "none"][..], build].concat()))
}

#[test]
fn the_device_library_and_the_c_library_carry_no_web_server_and_no_async_runtime() {
    let builds: [&[&str]; 2] =
        [&["-p", "edgecascade", "--no-default-features"], &["-p", "edgecascade-capi", "--no-default-features"]];
    for build in builds {
        let tree = crates(build);
        assert!(tree.iter().any(|c| c == "wasmtime"), "{build:?}: the tree was read: {tree:?}");
        for server in ["axum", "hyper", "hyper-util", "tower", "async-nats", "tokio", "wasmtime-wasi"] {
            assert!(!tree.iter().any(|c| c == server), "{build:?} carries {server}");
        }
    }
    // The default build does carry the HTTP tier and its runtime, so the check above can fail.
    let full = crates(&["-p", "edgecascade"]);
    assert!(["axum", "tokio"].iter().all(|c| full.iter().any(|f| f == c)), "{full:?}");
}
