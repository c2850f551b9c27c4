//! Signed plugins: a host with a trust policy refuses unsigned, tampered or foreign packages.

use crate::support::*;
use edgecascade::plugin::TrustPolicy;
use edgecascade::{Error, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new(bin()).args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap().trim().to_string();
    (key, public)
}

fn trusting(public: &str) -> Runtime {
    let trust = TrustPolicy::from_hex([public]).unwrap();
    Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), trust, ..Default::default() }).unwrap()
}

#[test]
fn signed_packages_load_and_everything_else_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keygen(tmp.path(), "release.key");
    let (_, stranger) = keygen(tmp.path(), "stranger.key");
    let pkg = tmp.path().join("hostile");
    copy_dir(&plugin("hostile"), &pkg);

    // Unsigned: refused by a host that requires signatures, fine for one that does not.
    let e = trusting(&public).load(&pkg).err().unwrap();
    assert!(matches!(e, Error::Unsigned { .. }), "{e:?}");
    assert!(runtime().load(&pkg).is_ok());

    let out = Command::new(bin()).args(["sign", "--key"]).arg(&key).arg(&pkg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = trusting(&public).load(&pkg).expect("a signed package loads");
    assert_eq!(label(&p.infer(&text("ok")).unwrap()), "fine");

    // Signed by someone else.
    let e = trusting(&stranger).load(&pkg).err().unwrap();
    assert!(matches!(e, Error::UntrustedKey { .. }), "{e:?}");

    // The CLI says the same.
    let ok = Command::new(bin())
        .args(["verify", "--trust"])
        .arg(format!("{}.pub", key.display()))
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = Command::new(bin()).args(["verify", "--trust", &stranger]).arg(&pkg).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not trust"));

    // A manifest changed after signing (a looser memory cap).
    let manifest = pkg.join("plugin.toml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let looser = original.replace("memory = \"64 MiB\"", "memory = \"1 GiB\"");
    assert_ne!(looser, original, "the hostile package's memory cap is written as in its template");
    std::fs::write(&manifest, looser).unwrap();
    let e = trusting(&public).load(&pkg).err().unwrap();
    assert!(matches!(e, Error::BadSignature { .. }), "{e:?}");
    std::fs::write(&manifest, &original).unwrap();

    // A module changed after signing: the signature still matches the manifest, the hash does not.
    let wasm = pkg.join("hostile.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    std::fs::write(&wasm, bytes).unwrap();
    // A host that must read the module to compile it catches the edit.
    let trust = TrustPolicy::from_hex([public.as_str()]).unwrap();
    let uncached = Runtime::new(RuntimeConfig { cache_dir: None, trust, ..Default::default() }).unwrap();
    let e = uncached.load(&pkg).err().unwrap();
    assert!(matches!(&e, Error::HashMismatch { file, .. } if file == "hostile.wasm"), "{e:?}");
    // A host that holds the module compiled from the bytes the manifest pins (the cache is
    // keyed by that sha256) runs those, and never reads the edited file.
    let cached = trusting(&public).load(&pkg).expect("the compiled module of the signed wasm");
    assert_eq!(label(&cached.infer(&text("ok")).unwrap()), "fine");
}
