//! Plugins compiled ahead of time: a pre-initialized artifact loads with no
//! compiler and no model parsing, answers exactly like the plain plugin, and
//! any artifact that does not fit the host is refused by name.

use crate::support::*;
use edgecascade::engine::aot::{self, ArtifactHeader};
use edgecascade::plugin::TrustPolicy;
use edgecascade::{CacheOutcome, Error, Plugin, PrecompileOptions, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A signed copy of news-topic with a signed, pre-initialized artifact for
/// this host; compiled once for the whole test binary (it takes Cranelift ~30 s).
struct Precompiled {
    _tmp: tempfile::TempDir,
    package: PathBuf,
    public_key: String,
}

fn precompiled() -> &'static Precompiled {
    static DONE: OnceLock<Precompiled> = OnceLock::new();
    DONE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let package = tmp.path().join("news-topic");
        copy_dir(&plugin("news-topic"), &package);
        let (secret, public_key) = edgecascade::plugin::keygen().unwrap();
        let key_file = tmp.path().join("release.key");
        std::fs::write(&key_file, secret).unwrap();
        let key = edgecascade::plugin::signing_key(&key_file).unwrap();
        edgecascade::plugin::sign(&package, &key).unwrap();
        let options = PrecompileOptions { target: None, preinitialize: true, key: Some(key) };
        let report = runtime().precompile(&package, &options).expect("precompile");
        assert!(report.preinitialized && report.signed);
        assert_eq!(report.path, aot::artifact_path(&package, aot::host_target()));
        Precompiled { _tmp: tmp, package, public_key }
    })
}

/// A runtime with no module cache, so nothing can come from anywhere but the artifact.
fn uncached(trust: TrustPolicy) -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: None, trust, ..Default::default() }).unwrap()
}

fn news_texts(n: usize) -> Vec<String> {
    let data = std::fs::read_to_string(repo_root().join("models/data/news/test.jsonl")).unwrap();
    data.lines()
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().into())
        .collect()
}

fn answers(plugin: &Plugin, texts: &[String]) -> Vec<edgecascade::Local> {
    texts.iter().map(|t| plugin.infer(&text(t)).unwrap()).collect()
}

#[test]
fn a_preinitialized_artifact_loads_without_compiling_and_answers_exactly_like_the_plain_plugin() {
    let p = precompiled();
    let plugin = uncached(TrustPolicy::from_hex([&p.public_key]).unwrap()).load(&p.package).unwrap();
    let report = plugin.load_report();
    assert_eq!(report.cache, CacheOutcome::Precompiled);
    assert!(report.preinitialized, "the artifact is a snapshot with the model loaded");
    let texts = news_texts(40);
    // Bit-identical: the same labels and the same f32 scores as the plugin that parses its model itself.
    assert_eq!(answers(&plugin, &texts), answers(&loaded("news-topic"), &texts));
    // A fresh instance (after the first) also starts from the snapshot.
    let copies = plugin.clone();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(|| answers(&copies, &texts[..5]))).collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), answers(&loaded("news-topic"), &texts[..5]));
        }
    });
}

/// Rewrites the artifact at `path` with `edit` applied to its header and body.
fn rewrite(path: &Path, edit: impl FnOnce(&mut ArtifactHeader, &mut Vec<u8>)) {
    let (mut header, mut body) = aot::read(path).unwrap();
    edit(&mut header, &mut body);
    write_artifact(path, &header, &body);
}

/// A copy of the precompiled package whose artifact has been edited.
fn edited(tmp: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let package = tmp.join("news-topic");
    copy_dir(&precompiled().package, &package);
    edit(&aot::artifact_path(&package, aot::host_target()));
    package
}

/// Why a host refuses the package's artifact. The host trusts native code, so
/// nothing but the checks under test stands between the artifact and wasmtime.
fn refusal(package: &Path) -> String {
    let trusting = Runtime::new(RuntimeConfig { cache_dir: None, trust_native_code: true, ..Default::default() });
    match trusting.unwrap().load(package) {
        Err(Error::ArtifactMismatch { reason, .. }) => reason,
        Err(other) => panic!("expected ArtifactMismatch, got {other}"),
        Ok(_) => panic!("a mismatched artifact was loaded"),
    }
}

#[test]
fn an_artifact_for_another_target_version_engine_or_package_is_refused_by_name() {
    type Edit = Box<dyn FnOnce(&mut ArtifactHeader, &mut Vec<u8>)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("target aarch64-unknown-linux-gnu", Box::new(|h, _| h.target = "aarch64-unknown-linux-gnu".into())),
        ("wasmtime version 47.0.0", Box::new(|h, _| h.wasmtime = "47.0.0".into())),
        ("engine settings 0123456789abcdef", Box::new(|h, _| h.engine = "0123456789abcdef".into())),
        ("package digest", Box::new(|h, _| h.package = "00".repeat(32))),
        ("does not match its recorded sha256", Box::new(|_, body| *body.last_mut().unwrap() ^= 1)),
    ];
    for (expected, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let package = edited(tmp.path(), |artifact| rewrite(artifact, edit));
        let reason = refusal(&package);
        assert!(reason.contains(expected), "{expected:?} not in {reason:?}");
    }

    // A new version of the package (new manifest, so a new digest) does not reuse the old machine code.
    let tmp = tempfile::tempdir().unwrap();
    let package = edited(tmp.path(), |_| {});
    let manifest = package.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("version = \"1.0.0\"", "version = \"1.0.1\"");
    std::fs::write(&manifest, text).unwrap();
    assert!(refusal(&package).contains("plugin version 1.0.0"));

    // Not an artifact at all, and a truncated one.
    for (bytes, expected) in [(b"\x7fELF garbage".to_vec(), "bad magic"), (b"ECAOT001\xff\xff".to_vec(), "truncated")] {
        let tmp = tempfile::tempdir().unwrap();
        let package = edited(tmp.path(), |artifact| std::fs::write(artifact, &bytes).unwrap());
        assert!(refusal(&package).contains(expected));
    }
}

#[test]
fn real_machine_code_for_another_architecture_is_refused_even_under_a_forged_header() {
    // `cargo xtask test` compiles news-topic for aarch64 for the qemu test.
    let arm = aot::artifact_path(&plugin("news-topic"), "aarch64-unknown-linux-gnu");
    assert!(arm.is_file(), "{} is missing: run the tests through `cargo xtask test`", arm.display());
    let tmp = tempfile::tempdir().unwrap();
    let package = edited(tmp.path(), |artifact| {
        std::fs::copy(&arm, artifact).unwrap();
        // Claim it is for this host; wasmtime's own check must still catch the aarch64 code.
        rewrite(artifact, |h, body| {
            h.target = aot::host_target().into();
            h.module_sha256 = edgecascade::plugin::sha256_hex(body);
            h.signature = None;
        });
    });
    let reason = refusal(&package);
    assert!(reason.starts_with("wasmtime:") && reason.contains("aarch64"), "{reason}");
}

#[test]
fn a_host_that_requires_signatures_requires_them_on_artifacts_too() {
    let p = precompiled();
    let trusted = || TrustPolicy::from_hex([&p.public_key]).unwrap();
    let plugin = uncached(trusted()).load(&p.package).expect("signed package, signed artifact");
    assert_eq!(plugin.load_report().cache, CacheOutcome::Precompiled);

    // An artifact the trusted key did not sign is passed over for the wasm, and the report says why.
    let passed_over = |package: &Path, why: &str| {
        let plugin = uncached(trusted()).load(package).expect("the wasm still loads");
        let report = plugin.load_report();
        assert_ne!(report.cache, CacheOutcome::Precompiled, "{why}");
        let warning = report.cache_warning.clone().unwrap_or_default();
        assert!(warning.contains("is not trusted") && warning.contains(why), "{warning}");
    };
    let tmp = tempfile::tempdir().unwrap();
    passed_over(&edited(tmp.path(), |a| rewrite(a, |h, _| h.signature = None)), "unsigned");
    let tmp = tempfile::tempdir().unwrap();
    passed_over(&edited(tmp.path(), |a| rewrite(a, |h, _| h.created_by = "someone else".into())), "bad signature");

    let (_, stranger) = edgecascade::plugin::keygen().unwrap();
    let foreign = TrustPolicy::from_hex([&p.public_key, &stranger]).unwrap();
    assert!(uncached(foreign).load(&p.package).is_ok(), "any listed key will do");
    let only_stranger = TrustPolicy::from_hex([stranger]).unwrap();
    assert!(matches!(uncached(only_stranger).load(&p.package), Err(Error::UntrustedKey { .. })));
}

#[test]
fn a_default_host_does_not_run_unsigned_native_code() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("news-topic");
    copy_dir(&plugin("news-topic"), &package);
    forge_unsigned_artifact(&package);
    // No trusted keys and no opt-in: the artifact is not touched, the wasm is compiled instead.
    let plugin = uncached(TrustPolicy::default()).load(&package).expect("falls back to the wasm");
    assert_eq!(plugin.load_report().cache, CacheOutcome::Uncached);
    let warning = plugin.load_report().cache_warning.clone().unwrap();
    assert!(warning.contains("trusts no signing keys") && warning.contains("--trust-native-code"), "{warning}");
    assert!(matches!(plugin.infer(&text("Shares rose after the merger")), Ok(edgecascade::Local::Answered(_))));

    // With the opt-in the host does deserialize it, which is how this test knows it would have.
    let trusting = Runtime::new(RuntimeConfig { cache_dir: None, trust_native_code: true, ..Default::default() });
    match trusting.unwrap().load(&package) {
        Err(Error::ArtifactMismatch { reason, .. }) => assert!(reason.contains("wasmtime"), "{reason}"),
        Err(other) => panic!("expected wasmtime's refusal, got {other}"),
        Ok(_) => panic!("garbage deserialized"),
    }
}

#[test]
fn a_verified_artifact_is_mapped_from_the_private_cache_and_an_edit_after_verification_never_runs() {
    let p = precompiled();
    let tmp = tempfile::tempdir().unwrap();
    let package = edited(tmp.path(), |_| {});
    let cache = tmp.path().join("cache");
    let signed_only = || {
        let trust = TrustPolicy::from_hex([&p.public_key]).unwrap();
        Runtime::new(RuntimeConfig { cache_dir: Some(cache.clone()), trust, ..Default::default() }).unwrap()
    };
    let texts = news_texts(10);
    let first = signed_only().load(&package).unwrap();
    assert_eq!(first.load_report().cache, CacheOutcome::Precompiled);
    let expected = answers(&first, &texts);
    // The first load verified the code and kept it under the sha256 its signed header records.
    let artifact = aot::artifact_path(&package, aot::host_target());
    let header = aot::read_header(&artifact).unwrap();
    let copy = cache.join(format!("aot-{}.cwasm", header.module_sha256));
    assert!(copy.is_file(), "no verified copy in {}", cache.display());

    // The package's machine code changes after verification (the header, and so the signature, stay).
    rewrite(&artifact, |_, body| *body.last_mut().unwrap() ^= 1);
    // Later starts map the verified copy: the edited bytes never run, and the answers are the same.
    let second = signed_only().load(&package).unwrap();
    assert_eq!(answers(&second, &texts), expected);

    // A copy that another user could have written is not trusted: the artifact is verified
    // again, and the edit is caught.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
        match signed_only().load(&package) {
            Err(Error::ArtifactMismatch { reason, .. }) => assert!(reason.contains("recorded sha256"), "{reason}"),
            Err(other) => panic!("expected ArtifactMismatch, got {other}"),
            Ok(_) => panic!("an edited artifact loaded past a copy that others could write"),
        }
    }
}
