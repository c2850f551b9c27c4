//! Bad packages and bad modules are refused with an error that names the cause.

use crate::support::*;
use edgecascade::{Error, Package};

/// After a refused package, the same runtime still loads and serves a good one.
fn runtime_still_serves() {
    let p = runtime().load(plugin("hostile")).expect("a good package still loads");
    assert_eq!(label(&p.infer(&text("ok")).unwrap()), "fine");
}

#[test]
fn a_tampered_model_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("digits");
    copy_dir(&plugin("digits"), &dir);
    let model = dir.join("digits-small.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&model, bytes).unwrap();
    let e = Package::open(&dir).unwrap().verify().unwrap_err();
    assert!(matches!(&e, Error::HashMismatch { file, .. } if file == "digits-small.onnx"), "{e:?}");
    runtime_still_serves();
}

#[test]
fn a_wrong_abi_version_is_refused_from_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = hostile_manifest("").replace("abi_version = 1", "abi_version = 2");
    let pkg = make_package(tmp.path(), &manifest, &[("hostile.wasm", &hostile_wasm())]);
    let e = runtime().load(&pkg).err().unwrap();
    assert!(matches!(e, Error::AbiMismatch { expected: 1, found: 2, .. }), "{e:?}");
    runtime_still_serves();
}

#[test]
fn a_wrong_abi_version_is_refused_from_the_module() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(2, ""))]);
    let e = runtime().load(&pkg).err().unwrap();
    assert!(matches!(e, Error::AbiMismatch { expected: 1, found: 2, .. }), "{e:?}");
    runtime_still_serves();
}

#[test]
fn garbage_bytes_are_refused_as_invalid_wasm() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", b"\0asm garbage, not a module")]);
    let e = runtime().load(&pkg).err().unwrap();
    assert!(matches!(e, Error::InvalidWasm { .. }), "{e:?}");
    runtime_still_serves();
}

#[test]
fn a_missing_export_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#).unwrap();
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wasm)]);
    let e = runtime().load(&pkg).err().unwrap();
    assert!(matches!(&e, Error::MissingExport { export, .. } if export == "edgecascade_abi_version"), "{e:?}");
}

#[test]
fn an_unknown_import_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let source = wat_source(1, "").replacen("(module", "(module (import \"env\" \"open_socket\" (func))", 1);
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat::parse_str(&source).unwrap())]);
    let e = runtime().load(&pkg).err().unwrap();
    assert!(matches!(&e, Error::Instantiate { message, .. } if message.contains("open_socket")), "{e:?}");
    // Wasmtime's own error stays reachable as the source, not only as text.
    let source = std::error::Error::source(&e).expect("wasmtime's error is the source");
    assert!(source.to_string().contains("open_socket") || format!("{source:?}").contains("open_socket"), "{source:?}");
}

#[test]
fn a_model_with_an_unsupported_op_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let tensor_wasm = std::fs::read(plugin("tensor").join("tensor.wasm")).unwrap();
    let model = std::fs::read(repo_root().join("tests/fixtures/unsupported-op.onnx")).unwrap();
    let manifest = "[plugin]\nname = \"unsupported\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"tensor.wasm\"\n\n\
                    [[models]]\nname = \"model\"\nfile = \"model.onnx\"\n";
    let pkg = make_package(tmp.path(), manifest, &[("tensor.wasm", &tensor_wasm), ("model.onnx", &model)]);
    let e = runtime().load(&pkg).err().unwrap();
    assert!(matches!(&e, Error::ModelRejected { message, .. } if message.contains("QLinearReduceMean")), "{e:?}");
    runtime_still_serves();
}

#[test]
fn malformed_abi_returns_are_contained() {
    let cases = [
        ("out of bounds", format!("(i64.const {})", (0x1_0000i64 << 32) | 16), "outside"),
        ("length overflow", format!("(i64.const {})", ((0xFFFF_FFF0u64 << 32) | 0xFFFF_FFFF) as i64), "output cap"),
        ("bad status byte", format!("(i64.const {})", (17i64 << 32) | 5), "status"),
        ("truncated JSON", format!("(i64.const {})", (16i64 << 32) | 7), "body"),
        ("empty frame", "(i64.const 0)".to_string(), "empty"),
    ];
    for (what, body, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(1, &body))]);
        let p = runtime().load(&pkg).unwrap();
        let e = p.infer(&text("x")).unwrap_err();
        assert!(matches!(&e, Error::MalformedOutput { detail, .. } if detail.contains(needle)), "{what}: {e:?}");
    }
    runtime_still_serves();
}

#[test]
fn an_answer_at_an_odd_address_is_fine() {
    // The ABI has no alignment requirement: a frame may start anywhere.
    let tmp = tempfile::tempdir().unwrap();
    let frame = "\\00{\\\"label\\\":\\\"odd\\\",\\\"confidence\\\":0.25}";
    let source = wat_source(1, &format!("(i64.const {})", (33i64 << 32) | 34)).replacen(
        "(func (export \"_initialize\"))",
        &format!("(data (i32.const 33) \"{frame}\") (func (export \"_initialize\"))"),
        1,
    );
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat::parse_str(&source).unwrap())]);
    let p = runtime().load(&pkg).unwrap();
    assert_eq!(label(&p.infer(&text("x")).unwrap()), "odd");
}

#[test]
fn bad_manifests_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("name = \"hostile\"", "name = \"Hostile Plugin\"", "plugin.name"),
        ("deadline = \"200ms\"", "deadline = \"soon\"", "soon"),
        ("file = \"hostile.wasm\"", "file = \"/etc/hostile.wasm\"", "inside the package"),
    ];
    for (from, to, needle) in cases {
        let dir = tmp.path().join(needle.replace(['.', ' '], "_"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugin.toml"), hostile_manifest("").replace(from, to)).unwrap();
        let e = Package::open(&dir).unwrap_err();
        assert!(matches!(&e, Error::Manifest { message, .. } if message.contains(needle)), "{to}: {e:?}");
    }
    let e = Package::open(tmp.path().join("does-not-exist")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn pack_keeps_the_authors_manifest_and_fills_in_only_the_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    // Comments, a size written the author's way, an inline model table, and a stale signature.
    let template = "# my plugin, by hand\nmodels = [{ name = \"model\", file = \"m.onnx\" }]\n\n\
                    [plugin]\nname = \"wat\"  # short\nversion = \"1\"\nabi_version = 1\n\n\
                    [wasm]\nfile = \"m.wasm\"\n\n[limits]\nmemory = \"64 MiB\"\n\n\
                    [signature]\nkey = \"00\"\ned25519 = \"00\"\n";
    let out = make_package(tmp.path(), template, &[("m.wasm", &wat_module(1, "")), ("m.onnx", b"not really onnx")]);
    let written = std::fs::read_to_string(out.join("plugin.toml")).unwrap();
    for kept in ["# my plugin, by hand", "name = \"wat\"  # short", "memory = \"64 MiB\""] {
        assert!(written.contains(kept), "{kept:?} is gone from:\n{written}");
    }
    assert!(!written.contains("[signature]"), "a stale signature stays:\n{written}");
    let package = Package::open(&out).unwrap().verify().expect("the hashes are filled in and right");
    assert_eq!(package.manifest().models[0].sha256.as_deref().map(str::len), Some(64));
    // The written manifest is the template plus the two hashes, line for line otherwise.
    let added: Vec<&str> = written.lines().filter(|l| !template.contains(*l)).collect();
    assert!(added.len() == 2 && added.iter().all(|l| l.contains("sha256")), "{added:?}");
}

#[cfg(unix)]
#[test]
fn packaged_files_are_as_readable_as_a_plainly_created_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(1, ""))]);
    let plain = tmp.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for file in ["plugin.toml", "m.wasm"] {
        assert_eq!(mode(&out.join(file)), mode(&plain), "{file}");
    }
}
