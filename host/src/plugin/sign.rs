//! Signed packages: ed25519 over the manifest.
//!
//! The manifest pins the sha256 of every file (wasm, models, assets), and
//! verification checks each file against it, so one signature over the
//! manifest covers the whole package.
//!
//! The signed bytes are defined here, not by a TOML library: the exact bytes
//! of `plugin.toml` before the line `[signature]`, with trailing whitespace
//! dropped (scheme `manifest-bytes-v1`). `edgecascade sign` appends the table
//! last, so signing does not change those bytes, and neither does a `toml`
//! upgrade. Editing the manifest after signing, even only to reorder keys or
//! change whitespace inside it, breaks the signature: the host refuses it with
//! [`Error::BadSignature`], saying the file changed since it was signed. The
//! same bytes name the package ([`super::VerifiedPackage::digest`]), which
//! precompiled artifacts are bound to.
//!
//! ```toml
//! [signature]
//! scheme = "manifest-bytes-v1"
//! key = "<hex ed25519 public key>"
//! ed25519 = "<hex signature>"
//! ```
//!
//! A signature without `scheme` is the legacy form (over the manifest
//! re-serialized without the table); hosts still verify it, `sign` no longer
//! writes it.
//!
//! A host with a [`TrustPolicy`] that lists keys refuses packages that are
//! unsigned, tampered with, or signed by a key it does not list.

use super::manifest::{MANIFEST_FILE, Manifest, Signature};
use crate::error::{Error, Result};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::path::Path;

/// The keys a host trusts. Empty (the default) means signatures are not required.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    keys: Vec<VerifyingKey>,
}

impl TrustPolicy {
    /// Trusts these keys; packages must be signed by one of them.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> TrustPolicy {
        TrustPolicy { keys: keys.into_iter().collect() }
    }

    /// Parses hex public keys (as written by `edgecascade keygen` into `*.pub`).
    pub fn from_hex<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Result<TrustPolicy> {
        let keys = keys.into_iter().map(|k| public_key(k.as_ref())).collect::<Result<Vec<_>>>()?;
        Ok(TrustPolicy { keys })
    }

    /// Whether signatures are required.
    pub fn requires_signature(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks the signature of `manifest`, read from `bytes` (the file), against this policy.
    pub fn check(&self, manifest: &Manifest, bytes: &[u8]) -> Result<()> {
        let plugin = manifest.plugin.name.clone();
        let Some(sig) = &manifest.signature else {
            return if self.requires_signature() { Err(Error::Unsigned { plugin }) } else { Ok(()) };
        };
        if !self.requires_signature() {
            return Ok(());
        }
        let bad = |detail: String| Error::BadSignature { plugin: plugin.clone(), detail };
        match sig.scheme.as_deref() {
            None => self.verify(&plugin, sig, &legacy_signed_bytes(manifest), "the manifest"),
            Some(SCHEME) => {
                let signed = signed_bytes(bytes).map_err(bad)?;
                self.verify(
                    &plugin,
                    sig,
                    signed,
                    "plugin.toml, which changed after it was signed (the signature covers its exact bytes)",
                )
            }
            Some(other) => Err(bad(format!("unknown signature scheme {other:?}; this host knows {SCHEME:?}"))),
        }
    }

    /// Checks that `sig` is a valid signature over `bytes` by a trusted key;
    /// `what` names the signed thing in the error.
    pub(crate) fn verify(&self, plugin: &str, sig: &Signature, bytes: &[u8], what: &str) -> Result<()> {
        let plugin = plugin.to_string();
        let key = public_key(&sig.key)?;
        if !self.keys.contains(&key) {
            return Err(Error::UntrustedKey { plugin, key: sig.key.clone() });
        }
        let raw: [u8; 64] = hex::decode(&sig.ed25519)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::BadSignature { plugin: plugin.clone(), detail: "not 64 hex bytes".into() })?;
        let signature = ed25519_dalek::Signature::from_bytes(&raw);
        key.verify_strict(bytes, &signature)
            .map_err(|_| Error::BadSignature { plugin, detail: format!("does not match {what}") })
    }
}

/// Signs `bytes` with `key`, as a [`Signature`] table.
pub(crate) fn signature(key: &SigningKey, bytes: &[u8]) -> Signature {
    Signature {
        scheme: None,
        key: hex::encode(key.verifying_key().to_bytes()),
        ed25519: hex::encode(key.sign(bytes).to_bytes()),
    }
}

/// The signature scheme `sign` writes.
pub const SCHEME: &str = "manifest-bytes-v1";

/// What a `manifest-bytes-v1` signature covers, and what names the package:
/// the bytes of the manifest file before the line `[signature]`, trailing
/// whitespace dropped. Fails when a `[signature]` table is followed by another
/// table (it must come last, as `sign` writes it).
pub(crate) fn signed_bytes(file: &[u8]) -> std::result::Result<&[u8], String> {
    let mut offset = 0;
    let mut signature_at = None;
    for line in file.split_inclusive(|b| *b == b'\n') {
        let trimmed = line.trim_ascii();
        if trimmed == b"[signature]" {
            signature_at = Some(offset);
        } else if signature_at.is_some() && trimmed.starts_with(b"[") {
            return Err(
                "the [signature] table must be the last table of plugin.toml, as `edgecascade sign` writes it".into()
            );
        }
        offset += line.len();
    }
    Ok(file[..signature_at.unwrap_or(file.len())].trim_ascii_end())
}

/// What a legacy signature (no `scheme`) covers: the manifest re-serialized without its table.
pub(super) fn legacy_signed_bytes(manifest: &Manifest) -> Vec<u8> {
    let mut unsigned = manifest.clone();
    unsigned.signature = None;
    unsigned.to_toml().into_bytes()
}

fn public_key(hex_key: &str) -> Result<VerifyingKey> {
    let bad =
        || Error::BadSignature { plugin: String::new(), detail: format!("{hex_key:?} is not an ed25519 public key") };
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// A new key pair as hex: `(secret, public)`.
pub fn keygen() -> Result<(String, String)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| Error::Engine(format!("no randomness for a key: {e}")))?;
    let key = SigningKey::from_bytes(&secret);
    Ok((hex::encode(key.to_bytes()), hex::encode(key.verifying_key().to_bytes())))
}

/// Reads a secret key written by [`keygen`] (hex, surrounding whitespace ignored).
pub fn signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bytes: [u8; 32] =
        hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| Error::BadSignature {
            plugin: String::new(),
            detail: format!("{} is not a hex ed25519 secret key", path.display()),
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Signs the package in `dir` in place: verifies its hashes, then writes the
/// `[signature]` table into its manifest. Returns the signed manifest.
///
/// The file's bytes before any old `[signature]` table are kept exactly, and
/// the new table is appended after them.
pub fn sign(dir: &Path, key: &SigningKey) -> Result<Manifest> {
    let package = super::Package::open(dir)?;
    let path = dir.join(MANIFEST_FILE);
    let unsigned = signed_bytes(package.manifest_bytes())
        .map_err(|message| Error::Manifest { path: path.clone(), message })?
        .to_vec();
    let verified = package.verify()?;
    let mut manifest = verified.manifest().clone();
    let mut sig = signature(key, &unsigned);
    sig.scheme = Some(SCHEME.into());
    let table = toml::to_string(&SignatureTable { signature: sig.clone() }).expect("a signature serializes");
    let mut file = unsigned;
    file.extend_from_slice(b"\n\n");
    file.extend_from_slice(table.as_bytes());
    crate::fsutil::write_atomic(&path, &file)?;
    manifest.signature = Some(sig);
    Ok(manifest)
}

#[derive(serde::Serialize)]
struct SignatureTable {
    signature: Signature,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "[plugin]\nname = \"p\"\nversion = \"1\"\nabi_version = 1\n\n[wasm]\nfile = \"m.wasm\"\n\
                            sha256 = \"00\"\n";

    fn signed_package(text: &str) -> (tempfile::TempDir, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), b"").unwrap();
        let sha = crate::plugin::sha256_hex(b"");
        std::fs::write(dir.path().join(MANIFEST_FILE), text.replace("\"00\"", &format!("\"{sha}\""))).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        sign(dir.path(), &key).unwrap();
        (dir, key)
    }

    fn check(dir: &Path, key: &SigningKey) -> Result<()> {
        let package = crate::plugin::Package::open(dir)?;
        TrustPolicy::new([key.verifying_key()]).check(package.manifest(), package.manifest_bytes())
    }

    #[test]
    fn the_signed_bytes_are_the_file_before_its_signature_table() {
        assert_eq!(signed_bytes(b"a = 1\n\n[signature]\nkey = \"k\"\n").unwrap(), b"a = 1");
        assert_eq!(signed_bytes(b"a = 1\n  \n").unwrap(), b"a = 1", "trailing whitespace is not signed");
        assert!(signed_bytes(b"[signature]\nkey = 1\n[plugin]\n").is_err(), "the table must come last");
    }

    #[test]
    fn signing_keeps_the_file_and_resigning_replaces_only_the_table() {
        let (dir, key) = signed_package(MANIFEST);
        let path = dir.path().join(MANIFEST_FILE);
        let once = std::fs::read_to_string(&path).unwrap();
        let original = MANIFEST.replace("\"00\"", &format!("\"{}\"", crate::plugin::sha256_hex(b"")));
        assert!(once.starts_with(original.trim_end()), "the manifest's own bytes are kept: {once}");
        assert!(once.contains("[signature]\nscheme = \"manifest-bytes-v1\""), "{once}");
        check(dir.path(), &key).unwrap();
        sign(dir.path(), &key).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), once, "signing again gives the same file");
    }

    #[test]
    fn reordered_keys_or_changed_whitespace_are_refused_as_a_changed_file() {
        let (dir, key) = signed_package(MANIFEST);
        let path = dir.path().join(MANIFEST_FILE);
        let signed = std::fs::read_to_string(&path).unwrap();
        let edits = [
            signed.replace("name = \"p\"\nversion = \"1\"", "version = \"1\"\nname = \"p\""),
            signed.replace("name = \"p\"", "name  =  \"p\""),
            signed.replace("[wasm]", "# a comment\n[wasm]"),
        ];
        for edited in edits {
            assert_ne!(edited, signed);
            std::fs::write(&path, &edited).unwrap();
            let e = check(dir.path(), &key).unwrap_err();
            assert!(
                matches!(&e, Error::BadSignature { detail, .. } if detail.contains("changed after it was signed")),
                "{e}"
            );
        }
        // Whitespace at the very end of the signed part, or after the table, is not signed.
        std::fs::write(&path, signed.replace("\n\n[signature]", "\n\n\n\n[signature]") + "\n\n").unwrap();
        check(dir.path(), &key).unwrap();
    }

    #[test]
    fn a_legacy_signature_over_the_reserialized_manifest_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), b"").unwrap();
        let text = MANIFEST.replace("\"00\"", &format!("\"{}\"", crate::plugin::sha256_hex(b"")));
        let mut manifest = Manifest::parse(&text, Path::new("plugin.toml")).unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        manifest.signature = Some(signature(&key, &legacy_signed_bytes(&manifest)));
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_toml()).unwrap();
        check(dir.path(), &key).unwrap();
        let mut unknown = manifest.clone();
        unknown.signature.as_mut().unwrap().scheme = Some("v9".into());
        std::fs::write(dir.path().join(MANIFEST_FILE), unknown.to_toml()).unwrap();
        assert!(matches!(check(dir.path(), &key), Err(Error::BadSignature { detail, .. }) if detail.contains("v9")));
    }
}
