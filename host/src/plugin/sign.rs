//! Signed packages: ed25519 over the manifest.
//!
//! The manifest pins the sha256 of every file (wasm, models, assets), and
//! verification checks each file against it, so one signature over the
//! manifest covers the whole package. The signed bytes are the manifest
//! re-serialized without its `[signature]` table (so reformatting the file by
//! hand does not break a signature, but changing any value does).
//!
//! ```toml
//! [signature]
//! key = "<hex ed25519 public key>"
//! ed25519 = "<hex signature>"
//! ```
//!
//! A host with a [`TrustPolicy`] that lists keys refuses packages that are
//! unsigned, tampered with, or signed by a key it does not list.

use super::manifest::{MANIFEST_FILE, Manifest, Signature};
use crate::{Error, Result};
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

    /// Checks `manifest`'s signature against this policy.
    pub fn check(&self, manifest: &Manifest) -> Result<()> {
        let plugin = manifest.plugin.name.clone();
        let Some(sig) = &manifest.signature else {
            return if self.requires_signature() { Err(Error::Unsigned { plugin }) } else { Ok(()) };
        };
        if !self.requires_signature() {
            return Ok(());
        }
        self.verify(&plugin, sig, &signed_bytes(manifest), "the manifest")
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
    Signature { key: hex::encode(key.verifying_key().to_bytes()), ed25519: hex::encode(key.sign(bytes).to_bytes()) }
}

/// What a signature covers: the manifest without its signature table.
pub(super) fn signed_bytes(manifest: &Manifest) -> Vec<u8> {
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
pub fn sign(dir: &Path, key: &SigningKey) -> Result<Manifest> {
    let verified = super::Package::open(dir)?.verify()?;
    let mut manifest = verified.manifest().clone();
    manifest.signature = Some(signature(key, &signed_bytes(&manifest)));
    super::write_atomic(&dir.join(MANIFEST_FILE), manifest.to_toml().as_bytes())?;
    Ok(manifest)
}
