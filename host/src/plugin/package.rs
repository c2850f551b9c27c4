//! Plugin packages on disk: open → verify, and `pack` to make one.

use super::manifest::{MANIFEST_FILE, Manifest};
use crate::error::{Error, Result};
use crate::fsutil::{sha256_hex, write_atomic};
use crate::sandbox::LoadPayload;
use edgecascade_abi::{ABI_VERSION, FileEntry, FileKind, LoadRequest};
use std::path::{Path, PathBuf};

/// A package directory with a parsed manifest. Nothing is verified yet.
#[derive(Debug, Clone)]
pub struct Package {
    dir: PathBuf,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
}

impl Package {
    /// Reads `dir/plugin.toml`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Package> {
        let dir = dir.as_ref().to_path_buf();
        let (manifest, manifest_bytes) = Manifest::read_with_bytes(&dir)?;
        Ok(Package { dir, manifest, manifest_bytes })
    }

    /// The manifest file's bytes, as read.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The package directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every model and asset and checks it against its sha256 in the
    /// manifest. The module is read and checked the same way, but only when
    /// it is first needed ([`VerifiedPackage::wasm`]): a host that runs the
    /// package's precompiled artifact never reads the wasm (18.8 MB for a
    /// plugin that carries tract), since the artifact's signed header binds
    /// its machine code to this manifest, which pins the wasm's hash.
    ///
    /// Fails with [`Error::AbiMismatch`] for another ABI version, with
    /// [`Error::Manifest`] when a hash is missing, and with
    /// [`Error::HashMismatch`] when a file was changed.
    pub fn verify(self) -> Result<VerifiedPackage> {
        self.verify_with(&super::TrustPolicy::default())
    }

    /// [`verify`](Package::verify), and also check the signature against
    /// `trust`: [`Error::Unsigned`], [`Error::UntrustedKey`] or
    /// [`Error::BadSignature`] when the policy lists keys and the package
    /// does not satisfy it.
    pub fn verify_with(self, trust: &super::TrustPolicy) -> Result<VerifiedPackage> {
        trust.check(&self.manifest, &self.manifest_bytes)?;
        let m = &self.manifest;
        if m.plugin.abi_version != ABI_VERSION {
            return Err(Error::AbiMismatch {
                plugin: m.plugin.name.clone(),
                expected: ABI_VERSION,
                found: m.plugin.abi_version.into(),
            });
        }
        let unhashed = |file: &String| Error::Manifest {
            path: self.dir.join(MANIFEST_FILE),
            message: format!("{file} has no sha256; run `edgecascade pack`"),
        };
        let wasm_sha256 = m.wasm.sha256.clone().ok_or_else(|| unhashed(&m.wasm.file))?;
        let mut files = Vec::new();
        for (kind, list) in [(FileKind::Model, &m.models), (FileKind::Asset, &m.assets)] {
            for f in list {
                let sha256 = f.sha256.as_ref().ok_or_else(|| unhashed(&f.file))?;
                files.push((f.name.clone(), kind, read_verified(&self.dir, &f.file, sha256)?));
            }
        }
        Ok(VerifiedPackage {
            dir: self.dir,
            manifest: self.manifest,
            manifest_bytes: self.manifest_bytes,
            wasm: std::sync::OnceLock::new(),
            wasm_sha256,
            files,
        })
    }
}

/// Reads `file` in `dir` and checks it against `sha256`.
fn read_verified(dir: &Path, file: &str, sha256: &str) -> Result<Vec<u8>> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let actual = sha256_hex(&bytes);
    if actual != sha256 {
        return Err(Error::HashMismatch { file: file.to_string(), expected: sha256.to_string(), actual });
    }
    Ok(bytes)
}

/// A package whose models and assets match their hashes, held in memory;
/// its module is read and checked when first needed.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    dir: PathBuf,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    /// Read and verified on first use.
    wasm: std::sync::OnceLock<Vec<u8>>,
    wasm_sha256: String,
    files: Vec<(String, FileKind, Vec<u8>)>,
}

impl VerifiedPackage {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The package directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest file's bytes, as read and verified (the signature covers
    /// them; re-serializing the manifest would not keep them).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The module's bytes, read and checked against the manifest's sha256 on
    /// the first call ([`Error::HashMismatch`] if the file changed, [`Error::Io`]
    /// if it cannot be read).
    pub fn wasm(&self) -> Result<&[u8]> {
        if let Some(wasm) = self.wasm.get() {
            return Ok(wasm);
        }
        let bytes = read_verified(&self.dir, &self.manifest.wasm.file, &self.wasm_sha256)?;
        Ok(self.wasm.get_or_init(|| bytes))
    }

    /// The module's verified sha256, lowercase hex.
    pub fn wasm_sha256(&self) -> &str {
        &self.wasm_sha256
    }

    /// The models and assets, as `(name, kind, bytes)`.
    pub fn files(&self) -> impl Iterator<Item = (&str, FileKind, &[u8])> {
        self.files.iter().map(|(n, k, b)| (n.as_str(), *k, b.as_slice()))
    }

    /// A sha256 over the manifest's bytes before its signature (what a
    /// signature covers; see [`crate::plugin::TrustPolicy`]). The manifest pins
    /// every file's hash, so this names the package's exact contents;
    /// precompiled artifacts are bound to it. Signing a package does not change it.
    pub fn digest(&self) -> String {
        digest_of(&self.manifest_bytes)
    }

    /// The digest of earlier versions (over the manifest re-serialized), which
    /// artifacts built by them carry; still accepted.
    pub(crate) fn legacy_digest(&self) -> String {
        sha256_hex(&super::sign::legacy_signed_bytes(&self.manifest))
    }

    /// The size of the models in bytes (assets and the module not included).
    pub fn model_bytes(&self) -> u64 {
        self.files.iter().filter(|(_, kind, _)| *kind == FileKind::Model).map(|(_, _, b)| b.len() as u64).sum()
    }

    /// Every file as `(path in the package, verified bytes)`, in the order of
    /// [`Manifest::files`]: the module, then models, then assets.
    /// Reads the module if it was not read yet.
    pub(crate) fn contents(&self) -> Result<impl Iterator<Item = (&str, &[u8])>> {
        let bytes = std::iter::once(self.wasm()?).chain(self.files.iter().map(|(_, _, b)| b.as_slice()));
        Ok(self.manifest.files().map(|(file, _)| file.as_str()).zip(bytes))
    }

    /// What each new instance loads (see `guest/ABI.md`): the request, and
    /// the files' bytes back to back, held once for every instance.
    /// Why this package cannot be precompiled as a pre-initialized snapshot,
    /// if it cannot: it imports wasi-nn, or it is the shared runtime itself.
    /// Reads (and checks) the wasm.
    pub fn snapshot_blocker(&self) -> Result<Option<&'static str>> {
        Ok(crate::sandbox::nn::snapshot_blocker(self.wasm()?))
    }

    pub(crate) fn load_payload(&self) -> LoadPayload {
        self.payload(false)
    }

    /// The load request for a plugin that imports wasi-nn, and its models
    /// apart: their bytes go to the shared runtime, and the request lists them
    /// with `runtime: true` and no bytes.
    pub(crate) fn runtime_payload(&self) -> (LoadPayload, crate::sandbox::nn::NnModels) {
        let models = self
            .files
            .iter()
            .filter(|(_, kind, _)| *kind == FileKind::Model)
            .map(|(name, _, bytes)| (name.clone(), std::sync::Arc::<[u8]>::from(bytes.as_slice())))
            .collect();
        (self.payload(true), std::sync::Arc::new(models))
    }

    fn payload(&self, models_in_runtime: bool) -> LoadPayload {
        let m = &self.manifest;
        let config = serde_json::to_value(&m.config).unwrap_or(serde_json::Value::Null);
        let in_runtime = |kind: &FileKind| models_in_runtime && *kind == FileKind::Model;
        let request = LoadRequest {
            abi_version: ABI_VERSION,
            name: m.plugin.name.clone(),
            version: m.plugin.version.clone(),
            labels: m.plugin.labels.clone(),
            config,
            files: self
                .files
                .iter()
                .map(|(name, kind, bytes)| FileEntry {
                    name: name.clone(),
                    kind: *kind,
                    len: if in_runtime(kind) { 0 } else { bytes.len() as u64 },
                    runtime: in_runtime(kind),
                })
                .collect(),
            abi_minor: None,
        };
        let files = self
            .files
            .iter()
            .filter(|(_, kind, _)| !in_runtime(kind))
            .map(|(_, _, bytes)| bytes.as_slice())
            .collect::<Vec<_>>()
            .concat();
        LoadPayload { request, files }
    }
}

/// Makes a package: reads the manifest template at `template` (a `plugin.toml`
/// whose hashes may be missing), finds each file next to the template or in
/// one of `search` directories, copies it into `out`, fills in every sha256,
/// and writes `out/plugin.toml`. Precompiled artifacts in `out` that were
/// built from other contents are removed. Returns the final manifest.
///
/// The manifest keeps the author's text: comments, order, and the way each
/// value is written (`"64 MiB"` stays `"64 MiB"`). Only the `sha256` fields
/// are filled in or replaced, and a `[signature]` is dropped, since it signed
/// other contents.
pub fn pack(template: &Path, search: &[PathBuf], out: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(template).map_err(|e| Error::io(template, e))?;
    let mut manifest = Manifest::parse(&text, template)?;
    // The same text as an editable document; `Manifest::parse` has already checked it.
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::Manifest { path: template.to_path_buf(), message: e.to_string() })?;
    let base = template.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (file, sha256) in manifest.files_mut() {
        let source = std::iter::once(base)
            .chain(search.iter().map(PathBuf::as_path))
            .map(|dir| dir.join(&*file))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Manifest {
                path: template.to_path_buf(),
                message: format!("{file} is not next to the template nor in {search:?}"),
            })?;
        let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
        let dest = out.join(&*file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        write_atomic(&dest, &bytes)?;
        *sha256 = Some(sha256_hex(&bytes));
    }
    manifest.signature = None;
    doc.remove("signature");
    fill_hashes(&mut doc, &manifest);
    let text = doc.to_string();
    let path = out.join(MANIFEST_FILE);
    // What is written must read back as the manifest just made.
    let written = Manifest::parse(&text, &path)?;
    if !written.files().eq(manifest.files()) {
        return Err(Error::Manifest {
            path: template.to_path_buf(),
            message: "the sha256 fields could not be filled in where the template has its files".into(),
        });
    }
    write_atomic(&path, text.as_bytes())?;
    super::artifact::remove_stale(out, &digest_of(text.as_bytes()));
    Ok(written)
}

/// Sets the `sha256` of `[wasm]` and of each `[[models]]` and `[[assets]]`
/// entry in `doc` to `manifest`'s, in place, whether the entries are tables or inline tables.
fn fill_hashes(doc: &mut toml_edit::DocumentMut, manifest: &Manifest) {
    let set = |item: &mut toml_edit::Item, sha256: &Option<String>| {
        if let Some(sha256) = sha256 {
            item["sha256"] = toml_edit::value(sha256.as_str());
        }
    };
    set(&mut doc["wasm"], &manifest.wasm.sha256);
    for (section, entries) in [("models", &manifest.models), ("assets", &manifest.assets)] {
        for (i, entry) in entries.iter().enumerate() {
            set(&mut doc[section][i], &entry.sha256);
        }
    }
}

/// The digest of a package whose manifest file holds `manifest_bytes`.
pub(crate) fn digest_of(manifest_bytes: &[u8]) -> String {
    sha256_hex(super::sign::signed_bytes(manifest_bytes).unwrap_or(manifest_bytes))
}
