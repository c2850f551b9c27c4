//! Shared helpers: where the plugins are, a runtime on the shared cache, and
//! package builders for purpose-made bad packages.

#![allow(dead_code)]

use edgecascade::{Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The packed plugins, built by `cargo xtask plugins`.
pub fn plugins_dir() -> PathBuf {
    let dir = std::env::var_os("EDGECASCADE_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/plugins"));
    assert!(
        dir.join("hostile/plugin.toml").is_file(),
        "no packed plugins in {}: run `cargo xtask test` (or `cargo xtask plugins` first)",
        dir.display()
    );
    dir
}

pub fn plugin(name: &str) -> PathBuf {
    plugins_dir().join(name)
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("EDGECASCADE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/module-cache"))
}

/// One runtime for the whole test binary, on the shared module cache.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), ..Default::default() }).expect("runtime")
    })
}

/// The loaded plugin `name`, shared by all tests (loading MiniLM takes a while).
pub fn loaded(name: &str) -> edgecascade::Plugin {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static LOADED: OnceLock<Mutex<HashMap<String, edgecascade::Plugin>>> = OnceLock::new();
    let map = LOADED.get_or_init(Default::default);
    if let Some(p) = map.lock().unwrap().get(name) {
        return p.clone();
    }
    let p = runtime().load(plugin(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    map.lock().unwrap().insert(name.to_string(), p.clone());
    p
}

/// Copies a package directory, subfolders (such as `precompiled/`) included.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Writes a precompiled artifact in its documented format (see `edgecascade::engine::aot`),
/// so tests can forge headers.
pub fn write_artifact(path: &Path, header: &edgecascade::engine::aot::ArtifactHeader, body: &[u8]) {
    let json = serde_json::to_vec(header).unwrap();
    let mut bytes = b"ECAOT001".to_vec();
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(body);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes an artifact for this host into the package at `dir` whose header fits
/// the host and the package exactly, unsigned, and whose body is not machine
/// code: deserializing it fails, so whether a host tried to run it shows.
pub fn forge_unsigned_artifact(dir: &Path) {
    use edgecascade::engine::{aot, cache, engine_fingerprint};
    let package = runtime().verify(dir).unwrap();
    let body = b"not machine code, and never to be run".to_vec();
    let header = aot::ArtifactHeader {
        plugin: package.manifest().plugin.name.clone(),
        version: package.manifest().plugin.version.clone(),
        target: aot::host_target().into(),
        wasmtime: cache::wasmtime_version().into(),
        engine: engine_fingerprint(),
        package: package.digest(),
        preinitialized: false,
        module_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
        created_by: "a test".into(),
        signature: None,
    };
    write_artifact(&aot::artifact_path(dir, aot::host_target()), &header, &body);
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// How much `round` grows this process's RSS: the least of three runs after
/// a warm-up. RSS is the whole test process's, and other tests run alongside:
/// a leak grows it in every round, their noise only in some.
pub fn quietest_rss_growth(round: impl Fn()) -> u64 {
    round(); // warm up allocator pools and caches
    (0..3)
        .map(|_| {
            let before = rss();
            round();
            rss().saturating_sub(before)
        })
        .min()
        .unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgecascade")
}

/// Writes `files` and a manifest template into a fresh directory, then packs
/// it (filling in hashes) into `<tmp>/pkg`. Returns the package directory.
pub fn make_package(tmp: &Path, manifest: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, bytes) in files {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    std::fs::write(src.join("plugin.toml"), manifest).unwrap();
    let out = tmp.join("pkg");
    edgecascade::plugin::pack(&src.join("plugin.toml"), &[], &out).expect("pack");
    out
}

/// A manifest for the hostile guest with extra TOML appended.
pub fn hostile_manifest(extra: &str) -> String {
    format!(
        "[plugin]\nname = \"hostile\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"hostile.wasm\"\n\n\
         [limits]\nmemory = \"64 MiB\"\ndeadline = \"200ms\"\nload_deadline = \"2s\"\nstderr = \"16 KiB\"\n{extra}"
    )
}

pub fn hostile_wasm() -> Vec<u8> {
    std::fs::read(plugin("hostile").join("hostile.wasm")).unwrap()
}

/// The text of a module that implements ABI v1 trivially: load answers `{}`
/// and infer answers `{"confidence":0.5}`; `infer_body` replaces infer's body.
pub fn wat_source(abi_version: i32, infer_body: &str) -> String {
    // The answer frame sits at 16 and is 19 bytes long; load's `{}` frame at 0 is 3.
    let answer = (16i64 << 32) | 19;
    let infer = if infer_body.is_empty() { format!("(i64.const {answer})") } else { infer_body.to_string() };
    format!(
        r#"(module
          (memory (export "memory") 1)
          (data (i32.const 0) "\00{{}}")
          (data (i32.const 16) "\00{{\"confidence\":0.5}}")
          (func (export "_initialize"))
          (func (export "edgecascade_abi_version") (result i32) (i32.const {abi_version}))
          (func (export "edgecascade_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "edgecascade_load") (param i32 i32) (result i64) (i64.const 3))
          (func (export "edgecascade_infer") (param i32 i32) (result i64) {infer})
          (func (export "edgecascade_prompt") (param i32 i32) (result i64) (i64.const {answer}))
          (func (export "edgecascade_parse_reply") (param i32 i32) (result i64) (i64.const {answer})))"#
    )
}

/// [`wat_source`], assembled.
pub fn wat_module(abi_version: i32, infer_body: &str) -> Vec<u8> {
    wat::parse_str(wat_source(abi_version, infer_body)).unwrap()
}

pub fn wat_manifest() -> &'static str {
    "[plugin]\nname = \"wat\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"m.wasm\"\n"
}

pub fn text(s: &str) -> edgecascade::Input {
    edgecascade::Input::text(s)
}

pub fn label(local: &edgecascade::Local) -> &str {
    match local {
        edgecascade::Local::Answered(a) => a.label.as_deref().unwrap_or(""),
        edgecascade::Local::Beyond { .. } => "<beyond>",
    }
}
