//! The precompiled-artifact file format: a plugin compiled ahead of time for
//! a device's target, stored in its package at
//! `precompiled/<target triple>.ecaot`.
//!
//! ```text
//! "ECAOT001" | header length (u32 LE) | header (JSON) | wasmtime artifact
//! ```
//!
//! The header binds the machine code to its target, wasmtime version, engine
//! settings and exact package (the digest of its manifest), records the code's
//! sha256, and carries an ed25519 signature over itself when signed. This
//! module only reads and writes the format; [`crate::engine::aot`] decides
//! whether a host may run what an artifact holds.

use super::VerifiedPackage;
use super::manifest::Signature;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The folder of a package that holds its precompiled artifacts.
pub const ARTIFACT_DIR: &str = "precompiled";

/// The file extension of an artifact.
pub const ARTIFACT_EXTENSION: &str = "ecaot";

const MAGIC: &[u8; 8] = b"ECAOT001";

/// Where the artifact for `target` lives in the package at `dir`.
pub fn artifact_path(dir: &Path, target: &str) -> PathBuf {
    dir.join(ARTIFACT_DIR).join(format!("{target}.{ARTIFACT_EXTENSION}"))
}

/// What an artifact is bound to, stored in front of the machine code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactHeader {
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The target triple the code is for.
    pub target: String,
    /// The wasmtime version that compiled it.
    pub wasmtime: String,
    /// A fingerprint of the engine settings it was compiled with.
    pub engine: String,
    /// The package digest ([`VerifiedPackage::digest`]).
    pub package: String,
    /// Whether the module is a snapshot taken after its models were loaded.
    pub preinitialized: bool,
    /// The sha256 of the wasmtime artifact that follows the header.
    pub module_sha256: String,
    /// The edgecascade version that wrote it.
    pub created_by: String,
    /// An ed25519 signature over the header without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl ArtifactHeader {
    pub(crate) fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = ArtifactHeader { signature: None, ..self.clone() };
        serde_json::to_vec(&unsigned).expect("a header always serializes")
    }
}

/// Writes an artifact: header, then the wasmtime artifact. Signs the header with `key` when given.
#[cfg(feature = "compiler")]
pub(crate) fn write(
    path: &Path,
    mut header: ArtifactHeader,
    module: &[u8],
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<u64> {
    header.module_sha256 = crate::fsutil::sha256_hex(module);
    header.signature = key.map(|k| super::signature(k, &header.signed_bytes()));
    let json = serde_json::to_vec(&header).expect("a header always serializes");
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + json.len() + module.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(module);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    crate::fsutil::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Reads an artifact's header and body. The body is not checked here.
pub fn read(path: &Path) -> Result<(ArtifactHeader, Vec<u8>)> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (header, body_start) = parse(path, &bytes)?;
    bytes.drain(..body_start);
    Ok((header, bytes))
}

/// Reads only an artifact's header, not the machine code behind it.
pub fn read_header(path: &Path) -> Result<ArtifactHeader> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut prefix = [0u8; MAGIC.len() + 4];
    let _ = file.read_exact(&mut prefix);
    let len = u32::from_le_bytes(prefix[MAGIC.len()..].try_into().expect("4 bytes")) as u64;
    let mut bytes = prefix.to_vec();
    file.take(len).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes).map(|(header, _)| header)
}

/// Parses the magic and the header at the start of `bytes`; returns the header and where the body starts.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<(ArtifactHeader, usize)> {
    let refuse = |reason: String| Error::ArtifactMismatch { path: path.to_path_buf(), reason };
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| refuse("it is not an edgecascade artifact (bad magic)".into()))?;
    let len = rest.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let json = match len {
        Some(len) if rest.len() >= 4 + len => &rest[4..4 + len],
        _ => return Err(refuse("its header is truncated".into())),
    };
    let header: ArtifactHeader =
        serde_json::from_slice(json).map_err(|e| refuse(format!("its header is not valid: {e}")))?;
    Ok((header, MAGIC.len() + 4 + json.len()))
}

/// Removes the artifacts in the package at `dir` that were built for another
/// package digest: after a re-pack they could only be refused.
pub(crate) fn remove_stale(dir: &Path, digest: &str) {
    let Ok(entries) = std::fs::read_dir(dir.join(ARTIFACT_DIR)) else { return };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let stale = path.extension().is_some_and(|x| x == ARTIFACT_EXTENSION)
            && read_header(&path).map_or(true, |h| h.package != digest);
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Puts `candidate`'s own artifacts into the package at `live_dir` and
/// removes the live ones it does not replace. Call it before the candidate's
/// manifest lands: after that, the old artifacts could only be refused.
pub(crate) fn replace_artifacts(candidate: &VerifiedPackage, live_dir: &Path) -> Result<()> {
    let digest = candidate.digest();
    if let Ok(entries) = std::fs::read_dir(candidate.dir().join(ARTIFACT_DIR)) {
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_some_and(|x| x == ARTIFACT_EXTENSION)
                && read_header(&path).is_ok_and(|h| h.package == digest)
            {
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let dest = live_dir.join(ARTIFACT_DIR).join(path.file_name().expect("a file name"));
                std::fs::create_dir_all(live_dir.join(ARTIFACT_DIR)).map_err(|e| Error::io(live_dir, e))?;
                crate::fsutil::write_atomic(&dest, &bytes)?;
            }
        }
    }
    remove_stale(live_dir, &digest);
    Ok(())
}
