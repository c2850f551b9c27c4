//! Precompiled plugin artifacts: a plugin compiled ahead of time, on a build
//! machine, for a device's target, so that the device never runs Cranelift.
//!
//! An artifact lives in its package, at `precompiled/<target triple>.ecaot`,
//! and is bound to everything that makes machine code valid: the target, the
//! wasmtime version, this host's engine settings, and the exact package (the
//! digest of its manifest, which pins every file's hash). A host looks only
//! for the artifact of its own target, and refuses one that does not match
//! with [`Error::ArtifactMismatch`], naming what differs; it never loads one
//! blindly, because wasmtime trusts deserialized code completely.
//!
//! ```text
//! "ECAOT001" | header length (u32 LE) | header (JSON) | wasmtime artifact
//! ```
//!
//! The header records the artifact's sha256, and an ed25519 signature over
//! the header when the artifact was signed. The sha256 gives integrity, not
//! authenticity, and an artifact runs outside the wasm sandbox, so a host
//! loads one only when a key it trusts signed it, or when the embedder opted
//! in to the package's native code (`RuntimeConfig::trust_native_code`,
//! `--trust-native-code`); otherwise it compiles the wasm, or, without a
//! compiler, refuses with `Error::UntrustedNativeCode`.

use crate::plugin::manifest::Signature;
use crate::plugin::{TrustPolicy, VerifiedPackage, sha256_hex};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

/// The folder of a package that holds its precompiled artifacts.
pub const ARTIFACT_DIR: &str = "precompiled";

/// The file extension of an artifact.
pub const ARTIFACT_EXTENSION: &str = "ecaot";

const MAGIC: &[u8; 8] = b"ECAOT001";

/// The target triple this host was built for.
pub fn host_target() -> &'static str {
    env!("EDGECASCADE_TARGET")
}

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
    fn signed_bytes(&self) -> Vec<u8> {
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
    header.module_sha256 = sha256_hex(module);
    header.signature = key.map(|k| crate::plugin::signature(k, &header.signed_bytes()));
    let json = serde_json::to_vec(&header).expect("a header always serializes");
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + json.len() + module.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(module);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    crate::plugin::write_atomic(path, &bytes)?;
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
fn parse(path: &Path, bytes: &[u8]) -> Result<(ArtifactHeader, usize)> {
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

/// Whether `path` holds an artifact for exactly this package, target,
/// wasmtime version and engine settings (so compiling again would change
/// nothing). Its machine code is not checked.
pub fn is_current(path: &Path, package: &VerifiedPackage, target: &str, preinitialized: bool) -> bool {
    read_header(path).is_ok_and(|h| {
        h.target == target
            && h.wasmtime == super::cache::wasmtime_version()
            && h.engine == super::engine_fingerprint()
            && h.package == package.digest()
            && h.preinitialized == preinitialized
    })
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
                crate::plugin::write_atomic(&dest, &bytes)?;
            }
        }
    }
    remove_stale(live_dir, &digest);
    Ok(())
}

/// What a host expects of an artifact.
pub(crate) struct Expected<'a> {
    pub target: &'a str,
    pub engine: &'a str,
    pub trust: &'a TrustPolicy,
    pub trust_native_code: bool,
}

/// Loads the artifact for this host's target from `package`, if there is one.
///
/// `Ok(None)`: the package has no artifact for this target. An artifact that
/// exists but does not match is an error, never skipped: a device should learn
/// that its build machine produced the wrong thing.
pub(crate) fn load(
    engine: &Engine,
    package: &VerifiedPackage,
    expected: &Expected<'_>,
) -> Result<Option<(Module, ArtifactHeader)>> {
    let path = artifact_path(package.dir(), expected.target);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let (header, body_start) = parse(&path, &bytes)?;
    let body = &bytes[body_start..];
    let refuse = |reason: String| Error::ArtifactMismatch { path: path.clone(), reason };
    let plugin = &package.manifest().plugin;
    let checks = [
        ("target", header.target.as_str(), expected.target),
        ("wasmtime version", header.wasmtime.as_str(), super::cache::wasmtime_version()),
        ("engine settings", header.engine.as_str(), expected.engine),
        ("plugin", header.plugin.as_str(), plugin.name.as_str()),
        ("plugin version", header.version.as_str(), plugin.version.as_str()),
    ];
    // Artifacts from before the exact-bytes digest carry the legacy one, which still names the same package.
    let digest = package.digest();
    let legacy = package.legacy_digest();
    let package_digest = if header.package == legacy { legacy.as_str() } else { digest.as_str() };
    let checks = checks.into_iter().chain([("package digest", header.package.as_str(), package_digest)]);
    for (what, found, wanted) in checks {
        if found != wanted {
            return Err(refuse(format!(
                "it was built for {what} {found}, and this host needs {wanted}; \
                 rebuild it with `edgecascade compile --target {}`",
                expected.target
            )));
        }
    }
    if sha256_hex(body) != header.module_sha256 {
        return Err(refuse("its machine code does not match its recorded sha256 (corrupt or altered)".into()));
    }
    if !expected.trust_native_code {
        let untrusted = |reason: String| Error::UntrustedNativeCode { path: path.clone(), reason };
        match (&header.signature, expected.trust.requires_signature()) {
            (_, false) => {
                return Err(untrusted(
                    "this host trusts no signing keys, so nothing vouches for this machine code; sign it \
                     (`edgecascade compile --key KEY`) and start the host with --trust KEY.pub, or opt in \
                     with --trust-native-code"
                        .into(),
                ));
            }
            (None, true) => {
                return Err(untrusted(
                    "it is unsigned, and this host only runs native code signed by a key it trusts \
                     (`edgecascade compile --key KEY`)"
                        .into(),
                ));
            }
            (Some(sig), true) => expected
                .trust
                .verify(&plugin.name, sig, &header.signed_bytes(), "the precompiled artifact")
                .map_err(|e| untrusted(e.to_string()))?,
        }
    }
    // SAFETY: the body is byte-for-byte what `Engine::precompile_module` wrote
    // (its sha256 is in the header, and the header is signed by a key the
    // host trusts, unless the embedder chose to trust the package's native
    // code), for this target, wasmtime version and engine settings; wasmtime
    // checks its own header, version and CPU features as well.
    let module = unsafe { Module::deserialize(engine, body) }.map_err(|e| refuse(format!("wasmtime: {e:#}")))?;
    Ok(Some((module, header)))
}
