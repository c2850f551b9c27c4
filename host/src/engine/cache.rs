//! The on-disk cache of compiled modules.
//!
//! Cranelift needs 10-24 s for a tract guest; deserializing takes tens of
//! milliseconds. An entry is keyed by the wasm's sha256, the engine's
//! compatibility hash (target, settings) and the wasmtime version, and it
//! carries its own sha256, because wasmtime trusts deserialized code
//! completely: a corrupt entry is detected, deleted and rebuilt, never loaded.
//!
//! Entries are native code that the host wrote itself, so they are trusted
//! only as long as no one else can have written them: on Unix the directory
//! and each entry must belong to the user the host runs as and be writable by
//! no one else. The host creates the directory with mode 0700; a directory
//! that fails the check is not read (the module is compiled and the reason
//! reported as a cache warning).
//!
//! The cache also keeps a verified copy of each precompiled artifact's machine
//! code ([`ModuleCache::precompiled`]), named by the sha256 that the
//! artifact's signed header records, so that a start maps the code instead of
//! reading and hashing 60 MB. A runtime-only host (no `compiler` feature)
//! compiles nothing, and keeps only these copies.
#![cfg_attr(not(feature = "compiler"), allow(dead_code, unused_imports))]

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"ECMOD001";
const HEADER: usize = MAGIC.len() + 32;

/// A directory of compiled modules.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into a sha256, to turn wasmtime's compatibility hash into key bytes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ModuleCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModuleCache { dir: dir.into() }
    }

    /// The default directory: `$EDGECASCADE_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/edgecascade`, else `~/.cache/edgecascade`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("EDGECASCADE_CACHE_DIR") {
            return Some(d.into());
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("edgecascade"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("edgecascade"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(feature = "compiler")]
    /// The entry path for a module with this wasm hash, on this engine.
    pub(crate) fn entry_path(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        self.dir.join(format!("{}.cwasm", cache_key(engine, wasm_sha256)))
    }

    #[cfg(feature = "compiler")]
    /// Loads a valid entry. `Ok(None)` when absent; a corrupt entry is removed and reported as `Err`.
    pub(crate) fn load(&self, engine: &Engine, wasm_sha256: &str) -> Result<Option<Module>> {
        let path = self.entry_path(engine, wasm_sha256);
        if !path.exists() {
            return Ok(None);
        }
        for checked in [&self.dir, &path] {
            owned_privately(checked)?;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Cache(format!("reading {}: {e}", path.display()))),
        };
        let corrupt = |why: String| {
            let _ = std::fs::remove_file(&path);
            Error::Cache(format!("{} is corrupt ({why}); removed it", path.display()))
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("bad header".into()));
        }
        let (header, artifact) = bytes.split_at(HEADER);
        if Sha256::digest(artifact).as_slice() != &header[MAGIC.len()..] {
            return Err(corrupt("checksum mismatch".into()));
        }
        // SAFETY: the artifact is byte-for-byte what `Module::serialize` wrote
        // for this engine's settings (checked by the sha256 above and by the
        // key); wasmtime also checks its own header and version.
        match unsafe { Module::deserialize(engine, artifact) } {
            Ok(m) => Ok(Some(m)),
            Err(e) => Err(corrupt(format!("{e}"))),
        }
    }

    #[cfg(feature = "compiler")]
    /// Stores a compiled module. Errors (a full disk) are returned for the
    /// caller to log; the module is usable either way.
    pub(crate) fn store(&self, engine: &Engine, wasm_sha256: &str, module: &Module) -> Result<PathBuf> {
        let artifact = module.serialize().map_err(|e| Error::Cache(format!("serializing: {e}")))?;
        let mut bytes = Vec::with_capacity(HEADER + artifact.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&Sha256::digest(&artifact));
        bytes.extend_from_slice(&artifact);
        create_private_dir(&self.dir).map_err(|e| Error::Cache(format!("creating {}: {e}", self.dir.display())))?;
        let path = self.entry_path(engine, wasm_sha256);
        crate::fsutil::write_atomic(&path, &bytes).map_err(|e| Error::Cache(e.to_string()))?;
        Ok(path)
    }
}

/// Creates `dir` (and its parents) with mode 0700 on Unix.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether `path` can only have been written by the user this host runs as:
/// owned by them, and not writable by group or others. Always true off Unix.
fn owned_privately(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Links are followed: what matters is who could have written the bytes read.
        let meta = std::fs::metadata(path).map_err(|e| Error::Cache(format!("{}: {e}", path.display())))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let why = if meta.uid() != me {
            Some(format!("it belongs to uid {}, and this host runs as uid {me}", meta.uid()))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!("it is writable by group or others (mode {:o})", meta.mode() & 0o7777))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::Cache(format!(
                "not loading compiled code from {}: {why}, so another user could have written it",
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl ModuleCache {
    /// A precompiled artifact's machine code, as a module mapped from this
    /// cache's verified copy of it.
    ///
    /// The copy is named by `module_sha256`, the hash that the artifact's
    /// header records (and that its signature covers). The first time,
    /// `verified_body` reads the artifact's machine code and checks it against
    /// that hash; the code is then written here, in the host's private
    /// directory, and mapped. Later starts map the copy with
    /// `Module::deserialize_file`: nothing read into the heap, nothing hashed,
    /// and the pages shared with the page cache. The copy is used only while
    /// the directory and the file pass the ownership checks above, so an
    /// artifact edited in its package after it was verified is never run; the
    /// host keeps running the code it verified. When the cache cannot hold the
    /// copy (a full disk, a directory that fails the checks), the module is
    /// loaded from the verified bytes in memory.
    pub(crate) fn precompiled(
        &self,
        engine: &Engine,
        module_sha256: &str,
        verified_body: impl FnOnce() -> Result<Vec<u8>>,
        refuse: impl Fn(String) -> Error,
    ) -> Result<Module> {
        // The name comes from a header that may be unsigned: keep it to a file name of hex digits.
        let hex = module_sha256.len() == 64 && module_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        let path = self.dir.join(format!("aot-{module_sha256}.cwasm"));
        let private = |path: &Path| owned_privately(&self.dir).and_then(|()| owned_privately(path)).is_ok();
        if hex && path.is_file() && private(&path) {
            // SAFETY: the host wrote this file itself, after checking that its bytes hash to
            // `module_sha256`, into a directory no one else can write; write_atomic replaces
            // files by rename, so the mapped inode never changes under the module.
            match unsafe { Module::deserialize_file(engine, &path) } {
                Ok(module) => return Ok(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "verified artifact copy unusable ({e:#}); verifying the artifact again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let body = verified_body()?;
        let stored = hex
            && create_private_dir(&self.dir).is_ok()
            && private(&self.dir)
            && crate::fsutil::write_atomic(&path, &body).is_ok();
        if stored {
            evict_from_page_cache(&path);
            // SAFETY: as above; the file holds exactly `body`, which was just verified.
            if let Ok(module) = unsafe { Module::deserialize_file(engine, &path) } {
                return Ok(module);
            }
        }
        // SAFETY: `body` hashes to the sha256 of the artifact's header (`verified_body`'s contract).
        unsafe { Module::deserialize(engine, &body) }.map_err(|e| refuse(format!("wasmtime: {e:#}")))
    }
}

/// Drops a file that was just written and synced from the page cache, so
/// that the processes that map it later hold only the pages of code they run.
///
/// Why: a file just written sits in the page cache in large folios, and a
/// fault on a mapping of it maps the whole folio. One news-topic request runs
/// code scattered over a 40 MB text section; with the copy as written, each
/// page it touched mapped about 270 KiB with it, and a warm process held
/// 46 MiB, of which 31 MiB was mapped code. Read back from disk on demand, the
/// same process holds 21 MiB. (`MADV_RANDOM` on the mapping does not help:
/// it changes read-ahead, not how much of a cached folio a fault maps.)
fn evict_from_page_cache(path: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(file) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: an open descriptor; advice only. Pages still dirty stay; nothing is lost.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

#[cfg(feature = "compiler")]
/// sha256 over the wasm's hash, wasmtime's version and the engine's compatibility hash.
fn cache_key(engine: &Engine, wasm_sha256: &str) -> String {
    let mut h = ShaHasher(Sha256::new());
    h.write(wasm_sha256.as_bytes());
    h.write(wasmtime_version().as_bytes());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(h.0.finalize())
}

/// The wasmtime version this host is built with.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}

#[cfg(all(test, target_os = "linux", feature = "compiler"))]
mod tests {
    use super::*;

    /// The kB of `path` that this process holds mapped (`Rss` of its mappings in /proc/self/smaps).
    fn mapped_kb(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut ours = false;
        let mut kb = 0;
        for line in smaps.lines() {
            if let Some(rss) = line.strip_prefix("Rss:") {
                if ours {
                    kb += rss.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
                }
            } else if line.split_whitespace().next().is_some_and(|range| range.contains('-') && !range.ends_with(':')) {
                ours = line.ends_with(name);
            }
        }
        kb
    }

    /// The copy is written in large folios; mapped as written, each page of code that runs
    /// would map about 270 KiB with it (see `evict_from_page_cache`).
    #[test]
    fn a_verified_copy_maps_only_the_code_that_runs() {
        // A module with a few MB of machine code.
        let body: String = (0..1200).map(|k| format!("local.get 0 i32.load offset={} i32.add ", k * 4)).collect();
        let funcs: String =
            (0..300).map(|i| format!("(func (export \"f{i}\") (param i32) (result i32) local.get 0 {body})")).collect();
        let wasm = wat::parse_str(format!("(module (memory 1) {funcs})")).unwrap();
        let engine = Engine::default();
        let body = Module::new(&engine, &wasm).unwrap().serialize().unwrap();
        let sha = hex::encode(Sha256::digest(&body));
        // On disk, not tmpfs, whose pages never leave memory.
        let dir = tempfile::tempdir_in(if Path::new("/var/tmp").is_dir() { "/var/tmp" } else { "." }).unwrap();
        let cache = ModuleCache::new(dir.path().join("cache"));
        let module = cache.precompiled(&engine, &sha, || Ok(body.clone()), |m| panic!("{m}")).unwrap();
        let path = cache.dir().join(format!("aot-{sha}.cwasm"));
        // Run every tenth function, as a request runs a part of a plugin's code.
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        for i in (0..300).step_by(10) {
            let f = instance.get_typed_func::<i32, i32>(&mut store, &format!("f{i}")).unwrap();
            assert_eq!(f.call(&mut store, 0).unwrap(), 0);
        }
        let size_kb = std::fs::metadata(&path).unwrap().len() / 1024;
        let mapped = mapped_kb(&path);
        assert!(size_kb > 5000, "{size_kb} kB");
        assert!(mapped < size_kb / 2, "{mapped} of {size_kb} kB mapped after loading");
        drop(module);
    }
}
