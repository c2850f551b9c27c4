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
//! The file format is [`crate::plugin::artifact`]'s. The header records the
//! artifact's sha256, and an ed25519 signature over the header when the
//! artifact was signed. The sha256 gives integrity, not
//! authenticity, and an artifact runs outside the wasm sandbox, so a host
//! loads one only when a key it trusts signed it, or when the embedder opted
//! in to the package's native code (`RuntimeConfig::trust_native_code`,
//! `--trust-native-code`); otherwise it compiles the wasm, or, without a
//! compiler, refuses with `Error::UntrustedNativeCode`.

use crate::error::{Error, Result};
use crate::fsutil::sha256_hex;
pub(crate) use crate::plugin::artifact::replace_artifacts;
#[cfg(feature = "compiler")]
pub(crate) use crate::plugin::artifact::write;
pub use crate::plugin::artifact::{ARTIFACT_DIR, ARTIFACT_EXTENSION, ArtifactHeader, artifact_path, read, read_header};
use crate::plugin::{TrustPolicy, VerifiedPackage};
use std::path::Path;
use wasmtime::{Engine, Module};

/// The target triple this host was built for.
pub fn host_target() -> &'static str {
    env!("EDGECASCADE_TARGET")
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
    cache: Option<&super::ModuleCache>,
) -> Result<Option<(Module, ArtifactHeader)>> {
    let path = artifact_path(package.dir(), expected.target);
    if !path.is_file() {
        return Ok(None);
    }
    // The header first: every check but the code's hash needs only the header.
    let header = read_header(&path)?;
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
    // The machine code, checked against the sha256 its header records (and its signature covers).
    let verified_body = || {
        let (_, body) = read(&path)?;
        if sha256_hex(&body) != header.module_sha256 {
            return Err(refuse("its machine code does not match its recorded sha256 (corrupt or altered)".into()));
        }
        Ok(body)
    };
    // SAFETY (both arms): the code is byte-for-byte what `Engine::precompile_module` wrote
    // (its sha256 is in the header, and the header is signed by a key the host trusts,
    // unless the embedder chose to trust the package's native code), for this target,
    // wasmtime version and engine settings; wasmtime checks its own header, version and
    // CPU features as well.
    let module = match cache {
        Some(cache) => cache.precompiled(engine, &header.module_sha256, verified_body, refuse)?,
        None => {
            let body = verified_body()?;
            unsafe { Module::deserialize(engine, &body) }.map_err(|e| refuse(format!("wasmtime: {e:#}")))?
        }
    };
    Ok(Some((module, header)))
}
