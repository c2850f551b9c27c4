//! The compiled-module cache: compile once, deserialize after; corrupt entries
//! are rebuilt, never trusted; an unwritable cache does not stop a load.

use crate::support::*;
use edgecascade::{CacheOutcome, Runtime, RuntimeConfig};
use std::process::Command;

fn runtime_at(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: Some(dir.to_path_buf()), ..Default::default() }).unwrap()
}

#[test]
fn a_second_cli_run_deserializes_instead_of_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(bin())
            .args(["run", "-v", "--plugin"])
            .arg(plugin("news-topic"))
            .args(["--text", "Shares rose after the merger", "--cache-dir"])
            .arg(cache.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = run();
    assert!(first.contains("compiled and cached"), "{first}");
    let entries = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(entries, 1);
    let second = run();
    assert!(second.contains("module from cache"), "{second}");
    assert!(!second.contains("compiled"), "{second}");
}

#[test]
fn a_corrupt_entry_is_rebuilt_not_trusted() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_at(cache.path());
    assert_eq!(rt.load(plugin("hostile")).unwrap().load_report().cache, CacheOutcome::Compiled);
    let entry = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&entry).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let p = rt.load(plugin("hostile")).unwrap();
    assert_eq!(p.load_report().cache, CacheOutcome::Rebuilt);
    assert!(p.load_report().cache_warning.as_deref().unwrap_or("").contains("corrupt"));
    assert_eq!(label(&p.infer(&text("ok")).unwrap()), "fine");
    assert_eq!(rt.load(plugin("hostile")).unwrap().load_report().cache, CacheOutcome::Hit);
}

#[test]
fn an_unwritable_cache_does_not_stop_a_load() {
    let tmp = tempfile::tempdir().unwrap();
    // A file where the cache directory should be: every write fails, as on a full or read-only disk.
    let blocked = tmp.path().join("cache");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let p = runtime_at(&blocked).load(plugin("hostile")).unwrap();
    assert_eq!(p.load_report().cache, CacheOutcome::Uncached);
    assert!(p.load_report().cache_warning.is_some());
    assert_eq!(label(&p.infer(&text("ok")).unwrap()), "fine");
}

#[test]
fn a_cache_that_others_could_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_at(cache.path());
    // A tiny module, so that each recompile below takes milliseconds.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = make_package(tmp.path(), wat_manifest(), &[("m.wasm", &wat_module(1, ""))]);
    assert_eq!(rt.load(&pkg).unwrap().load_report().cache, CacheOutcome::Compiled);
    let entry = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
    let set_mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // A directory anyone may write to: whatever is in it could be anyone's machine code.
    set_mode(cache.path(), 0o777);
    let p = rt.load(&pkg).unwrap();
    assert_ne!(p.load_report().cache, CacheOutcome::Hit);
    let warning = p.load_report().cache_warning.clone().unwrap_or_default();
    assert!(warning.contains("writable by group or others") && warning.contains("not loading"), "{warning}");
    assert!(p.infer(&text("ok")).is_ok());
    // The same for an entry others may write, in a private directory.
    set_mode(cache.path(), 0o700);
    set_mode(&entry, 0o666);
    let warning = rt.load(&pkg).unwrap().load_report().cache_warning.clone().unwrap_or_default();
    assert!(warning.contains("writable by group or others"), "{warning}");
    // A private directory with a private entry (as the host writes them) is trusted again.
    set_mode(&entry, 0o600);
    assert_eq!(rt.load(&pkg).unwrap().load_report().cache, CacheOutcome::Hit);
}
