//! The engine: one wasmtime `Engine` and `Linker` shared by every plugin,
//! the epoch ticker that enforces deadlines, the compiled-module cache, and
//! precompiled (ahead-of-time, optionally pre-initialized) artifacts.

pub mod aot;
pub mod cache;

use crate::error::{Error, Result};
use crate::fsutil::sha256_hex;
pub use crate::plugin::{CacheOutcome, LoadReport};
use crate::plugin::{Package, Plugin, TrustPolicy, VerifiedPackage};
use crate::sandbox::{self, HostState};
pub use cache::ModuleCache;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, Linker, Module};

/// How to build a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled modules are cached. Default: [`ModuleCache::default_dir`];
    /// `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances; deadlines are rounded up to it. Default 2 ms.
    pub epoch_tick: Duration,
    /// Keys a plugin must be signed by. Default: none, so signatures are not required.
    /// A precompiled artifact signed by one of these keys is loaded as native code.
    pub trust: TrustPolicy,
    /// Trust the native code in these packages: load precompiled artifacts
    /// (`precompiled/<target>.ecaot`) that no trusted key signed. Default
    /// `false`, because an artifact is machine code that runs outside the wasm
    /// sandbox, and whoever can write a package directory could otherwise run
    /// code in the host. When `false`, an artifact must be signed by a key in
    /// [`RuntimeConfig::trust`]; one that is not is passed over for the
    /// package's wasm (compiled here, with the reason in
    /// [`LoadReport::cache_warning`]), or, on a host built without a compiler,
    /// refused with [`Error::UntrustedNativeCode`]. The compiled-module cache is
    /// the host's own and is trusted only while its directory is owned by this
    /// user and writable by no one else (see [`ModuleCache`]).
    pub trust_native_code: bool,
    /// Instantiate from a pool of this many pre-reserved instance slots
    /// (wasmtime's pooling allocator), shared by all plugins: a new instance
    /// reuses a slot instead of mapping fresh memory. Default: `None`, each
    /// instance maps its own memory. Reserves 4 GiB of address space per slot.
    pub pooling: Option<u32>,
    /// The package of the shared inference runtime that plugins importing
    /// wasi-nn are linked to (built from `guest/runtime`). Default: `None`,
    /// which looks for a package named `nn-runtime` next to each such plugin's
    /// own directory. It is verified, cached and precompiled like a plugin,
    /// under the same trust policy; a plugin that needs it and finds none
    /// fails to load with [`Error::NnRuntime`]. Plugins without wasi-nn never read it.
    pub nn_runtime: Option<PathBuf>,
}

/// The name of the shared runtime's package, looked for next to a plugin
/// that imports wasi-nn when [`RuntimeConfig::nn_runtime`] is not set.
pub const NN_RUNTIME_PACKAGE: &str = "nn-runtime";

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: ModuleCache::default_dir(),
            epoch_tick: Duration::from_millis(2),
            trust: TrustPolicy::default(),
            trust_native_code: false,
            pooling: None,
            nn_runtime: None,
        }
    }
}

/// The engine settings that compiled code depends on, as recorded in
/// precompiled artifacts. [`wasmtime_config`] applies them: change both together.
const ENGINE_SETTINGS: &[(&str, &str)] = &[
    ("epoch_interruption", "on"),
    ("simd", "on"),
    ("relaxed_simd", "deterministic"),
    ("cranelift_opt_level", "speed"),
];

/// A short fingerprint of [`ENGINE_SETTINGS`]; an artifact compiled under other settings is refused.
pub fn engine_fingerprint() -> String {
    sha256_hex(format!("{ENGINE_SETTINGS:?}").as_bytes())[..16].to_string()
}

/// The wasmtime configuration every engine of this host uses; `target`
/// cross-compiles for another triple (code that only a device of that target can run).
fn wasmtime_config(target: Option<&str>) -> Result<Config> {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    wasm.wasm_simd(true);
    // Guests may use relaxed SIMD; keep its results the same on every host.
    wasm.wasm_relaxed_simd(true);
    wasm.relaxed_simd_deterministic(true);
    #[cfg(feature = "compiler")]
    wasm.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(target) = target {
        #[cfg(feature = "compiler")]
        wasm.target(target).map_err(|e| Error::Engine(format!("target {target}: {e:#}")))?;
        #[cfg(not(feature = "compiler"))]
        return Err(Error::Engine(format!("cannot compile for {target}: this host is built without a compiler")));
    }
    Ok(wasm)
}

/// The host runtime: compiles, caches and loads plugins.
///
/// Create one per process and share it (it is cheap to clone); each loaded
/// [`Plugin`] keeps what it needs.
///
/// ```no_run
/// let runtime = edgecascade::Runtime::new(Default::default())?;
/// let plugin = runtime.load("target/plugins/news-topic")?;
/// let answer = plugin.infer(&edgecascade::Input::text("The central bank raised rates"))?;
/// println!("{answer:?}");
/// # Ok::<(), edgecascade::Error>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ModuleCache>,
    epoch_tick: Duration,
    trust: TrustPolicy,
    trust_native_code: bool,
    nn_runtime: Option<PathBuf>,
    /// The shared runtime, compiled once and reused by every plugin that
    /// imports wasi-nn: its directory, its package digest, and the module.
    nn_linked: std::sync::Mutex<Option<(PathBuf, String, wasmtime::InstancePre<HostState>)>>,
    // Dropping the sender stops the ticker thread.
    _ticker: mpsc::Sender<()>,
}

impl Runtime {
    /// Builds the engine (SIMD on, epoch interruption on) and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let mut wasm = wasmtime_config(None)?;
        if let Some(slots) = config.pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_core_instances(slots)
                .total_memories(slots)
                .total_tables(slots)
                .max_memory_size(4 << 30)
                .table_elements(100_000);
            wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let linker = sandbox::linker(&engine)?;
        let tick = config.epoch_tick.max(Duration::from_micros(100));
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("edgecascade-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| Error::Engine(format!("starting the epoch thread: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache: config.cache_dir.map(ModuleCache::new),
                epoch_tick: tick,
                trust: config.trust,
                trust_native_code: config.trust_native_code,
                nn_runtime: config.nn_runtime,
                nn_linked: std::sync::Mutex::new(None),
                _ticker: stop,
            }),
        })
    }

    /// The wasmtime engine. Crate-private: wasmtime is pinned to one version,
    /// and a public `wasmtime` type would make each upgrade an embedder's break.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The module cache, if enabled.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.inner.cache.as_ref()
    }

    /// Where this runtime caches the compiled module of a wasm file with this
    /// sha256 (lowercase hex); `None` when the cache is off. The file exists
    /// only once the module has been compiled here.
    #[cfg(feature = "compiler")]
    pub fn cached_module_path(&self, wasm_sha256: &str) -> Option<PathBuf> {
        self.cache().map(|c| c.entry_path(self.engine(), wasm_sha256))
    }

    pub(crate) fn epoch_tick(&self) -> Duration {
        self.inner.epoch_tick
    }

    /// Opens, verifies (hashes, and the signature if the runtime's trust
    /// policy lists keys) and loads the package in `dir`.
    pub fn load(&self, dir: impl AsRef<Path>) -> Result<Plugin> {
        self.load_verified(self.verify(dir)?)
    }

    /// Opens and verifies the package in `dir` under this runtime's trust policy.
    /// The wasm is checked when it is first needed (see [`Package::verify`]).
    pub fn verify(&self, dir: impl AsRef<Path>) -> Result<VerifiedPackage> {
        Package::open(dir)?.verify_with(&self.inner.trust)
    }

    /// [`verify`](Runtime::verify), and the wasm checked now as well: for a
    /// package about to replace one that serves (a hot reload, a fleet
    /// update), which must be whole on disk even when this host would run
    /// code it compiled before and never read the file.
    pub fn verify_complete(&self, dir: impl AsRef<Path>) -> Result<VerifiedPackage> {
        let package = self.verify(dir)?;
        package.wasm()?;
        Ok(package)
    }

    /// Whether loading this package would need no compilation: it has a
    /// precompiled artifact for this host, or its module is in the cache.
    pub fn is_cached(&self, package: &VerifiedPackage) -> bool {
        #[cfg(feature = "compiler")]
        let cached = self.cache().is_some_and(|c| c.entry_path(self.engine(), package.wasm_sha256()).is_file());
        #[cfg(not(feature = "compiler"))]
        let cached = false;
        let may_use_artifact = self.inner.trust_native_code || self.inner.trust.requires_signature();
        cached || (may_use_artifact && aot::artifact_path(package.dir(), aot::host_target()).is_file())
    }

    /// Loads the package's precompiled artifact for this host if it has one
    /// and trusts it (refusing one that does not match), else compiles (or
    /// deserializes from the cache); then checks the exports and loads a
    /// first instance. An artifact this host does not trust
    /// ([`RuntimeConfig::trust_native_code`]) is passed over for the wasm when
    /// the host has a compiler, and is an [`Error::UntrustedNativeCode`] when not.
    pub fn load_verified(&self, package: VerifiedPackage) -> Result<Plugin> {
        let started = Instant::now();
        let expected = aot::Expected {
            target: aot::host_target(),
            engine: &engine_fingerprint(),
            trust: &self.inner.trust,
            trust_native_code: self.inner.trust_native_code,
        };
        let mut passed_over = None;
        let artifact = match aot::load(self.engine(), &package, &expected, self.cache()) {
            Err(e @ Error::UntrustedNativeCode { .. }) if cfg!(feature = "compiler") => {
                tracing::warn!(plugin = %package.manifest().plugin.name, "{e}; compiling its wasm instead");
                passed_over = Some(format!("{e}; compiled its wasm instead"));
                None
            }
            other => other?,
        };
        let (module, cache, cache_warning, preinitialized) = match artifact {
            Some((module, header)) => (module, CacheOutcome::Precompiled, None, header.preinitialized),
            None => {
                let (module, cache, warning) = self.module(&package)?;
                (module, cache, passed_over.or(warning), false)
            }
        };
        let module_time = started.elapsed();
        let name = &package.manifest().plugin.name;
        sandbox::check_exports(name, &module, preinitialized)?;
        let pre = self.inner.linker.instantiate_pre(&module).map_err(|e| Error::instantiate(name, e))?;
        let runtime = if sandbox::nn::imports_nn(&module) { Some(self.nn_runtime_for(&package)?) } else { None };
        let report = LoadReport { cache, module_time, instantiate_time: Duration::ZERO, cache_warning, preinitialized };
        Plugin::new(self.epoch_tick(), package, pre, runtime, report)
    }

    /// Where the shared runtime for this plugin is looked for ([`RuntimeConfig::nn_runtime`]).
    pub fn nn_runtime_dir(&self, plugin: &VerifiedPackage) -> PathBuf {
        match &self.inner.nn_runtime {
            Some(dir) => dir.clone(),
            None => plugin.dir().parent().unwrap_or(Path::new(".")).join(NN_RUNTIME_PACKAGE),
        }
    }

    /// When loading `plugin` will compile the shared runtime first (the
    /// plugin imports wasi-nn, and this host has no compiled runtime yet):
    /// the runtime's directory and the size of its wasm. For progress
    /// messages; reads only the start of the plugin's module, unverified.
    pub fn nn_runtime_to_compile(&self, plugin: &VerifiedPackage) -> Option<(PathBuf, u64)> {
        use std::io::Read;
        let mut head = Vec::new();
        let file = std::fs::File::open(plugin.dir().join(&plugin.manifest().wasm.file)).ok()?;
        // The import section comes before the code; 1 MiB holds it in any plugin.
        file.take(1 << 20).read_to_end(&mut head).ok()?;
        if !sandbox::nn::wasm_imports_nn(&head) {
            return None;
        }
        let dir = self.nn_runtime_dir(plugin);
        if let Some((at, _, _)) = &*self.inner.nn_linked.lock().unwrap_or_else(|p| p.into_inner())
            && *at == dir
        {
            return None;
        }
        let runtime = self.verify(&dir).ok()?;
        if self.is_cached(&runtime) {
            return None;
        }
        let bytes = std::fs::metadata(dir.join(&runtime.manifest().wasm.file)).map_or(0, |m| m.len());
        Some((dir, bytes))
    }

    /// The shared runtime for a plugin that imports wasi-nn: verified under
    /// this runtime's trust policy, then compiled (or taken from the cache, or
    /// its precompiled artifact) once, and reused while its package is unchanged.
    fn nn_runtime_for(&self, plugin: &VerifiedPackage) -> Result<wasmtime::InstancePre<HostState>> {
        let name = &plugin.manifest().plugin.name;
        let dir = self.nn_runtime_dir(plugin);
        let failed = |message: String| Error::NnRuntime { plugin: name.clone(), path: dir.clone(), message };
        if !dir.join(crate::plugin::manifest::MANIFEST_FILE).is_file() {
            return Err(failed(format!(
                "there is no package there (install the `{NN_RUNTIME_PACKAGE}` package next to the plugin, \
                 or name one with RuntimeConfig::nn_runtime / --nn-runtime)"
            )));
        }
        let package = self.verify(&dir).map_err(|e| failed(e.to_string()))?;
        let digest = package.digest();
        let mut linked = self.inner.nn_linked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, known, pre)) = &*linked
            && *at == dir
            && *known == digest
        {
            return Ok(pre.clone());
        }
        let expected = aot::Expected {
            target: aot::host_target(),
            engine: &engine_fingerprint(),
            trust: &self.inner.trust,
            trust_native_code: self.inner.trust_native_code,
        };
        let module = match aot::load(self.engine(), &package, &expected, self.cache()) {
            Ok(Some((module, _))) => module,
            Err(e @ Error::UntrustedNativeCode { .. }) if !cfg!(feature = "compiler") => {
                return Err(failed(e.to_string()));
            }
            _ => self.module(&package).map_err(|e| failed(e.to_string()))?.0,
        };
        sandbox::nn::check_runtime_exports(&module)
            .map_err(|m| failed(format!("not a runtime this host can link: {m}")))?;
        let pre = self.inner.linker.instantiate_pre(&module).map_err(|e| failed(format!("{e:#}")))?;
        *linked = Some((dir.clone(), digest, pre.clone()));
        Ok(pre)
    }

    /// The compiled module for a package, from the cache when possible.
    #[cfg(feature = "compiler")]
    pub(crate) fn module(&self, package: &VerifiedPackage) -> Result<(Module, CacheOutcome, Option<String>)> {
        let engine = self.engine();
        let sha = package.wasm_sha256();
        let name = &package.manifest().plugin.name;
        let mut warning = None;
        let mut rebuilt = false;
        if let Some(cache) = self.cache() {
            match cache.load(engine, sha) {
                Ok(Some(module)) => return Ok((module, CacheOutcome::Hit, None)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(plugin = %name, "{e}");
                    warning = Some(e.to_string());
                    rebuilt = true;
                }
            }
        }
        let module = self.compile(name, package.wasm()?)?;
        let outcome = match self.cache().map(|c| c.store(engine, sha, &module)) {
            Some(Ok(path)) => {
                tracing::debug!(plugin = %name, path = %path.display(), "stored compiled module");
                if rebuilt { CacheOutcome::Rebuilt } else { CacheOutcome::Compiled }
            }
            Some(Err(e)) => {
                tracing::warn!(plugin = %name, "could not cache the compiled module: {e}");
                warning = Some(e.to_string());
                CacheOutcome::Uncached
            }
            None => CacheOutcome::Uncached,
        };
        Ok((module, outcome, warning))
    }

    #[cfg(feature = "compiler")]
    fn compile(&self, plugin: &str, wasm: &[u8]) -> Result<Module> {
        self.compile_with(self.engine(), plugin, wasm)
    }

    /// Without a compiler, only precompiled artifacts load.
    #[cfg(not(feature = "compiler"))]
    pub(crate) fn module(&self, package: &VerifiedPackage) -> Result<(Module, CacheOutcome, Option<String>)> {
        let plugin = &package.manifest().plugin.name;
        Err(Error::InvalidWasm {
            plugin: plugin.to_string(),
            message: format!(
                "this host is built without a compiler, and the package has no precompiled artifact for {} \
                 (build one with `edgecascade compile --target {}`)",
                aot::host_target(),
                aot::host_target()
            ),
            source: None,
        })
    }

    /// Compiles the package in `dir` ahead of time for `options.target` and
    /// writes the artifact into the package (`precompiled/<target>.ecaot`).
    ///
    /// With `options.preinitialize`, the plugin first runs here, in the
    /// sandbox, until its models are loaded, and the artifact is a snapshot of
    /// that instance: a device then starts instances without parsing any model.
    #[cfg(feature = "compiler")]
    pub fn precompile(&self, dir: impl AsRef<Path>, options: &PrecompileOptions) -> Result<PrecompileReport> {
        let package = self.verify(dir)?;
        let manifest = package.manifest();
        let target = options.target.clone().unwrap_or_else(|| aot::host_target().to_string());
        let started = Instant::now();
        let wasm = if options.preinitialize { self.preinitialize(&package)? } else { package.wasm()?.to_vec() };
        let snapshot_time = started.elapsed();
        let started = Instant::now();
        // Code for this very host keeps Cranelift's native CPU features; another target gets its baseline.
        let config = wasmtime_config((target != aot::host_target()).then_some(target.as_str()))?;
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let code = engine.precompile_module(&wasm).map_err(|e| Error::invalid_wasm(&manifest.plugin.name, e))?;
        let compile_time = started.elapsed();
        let header = aot::ArtifactHeader {
            plugin: manifest.plugin.name.clone(),
            version: manifest.plugin.version.clone(),
            target: target.clone(),
            wasmtime: cache::wasmtime_version().to_string(),
            engine: engine_fingerprint(),
            package: package.digest(),
            preinitialized: options.preinitialize,
            module_sha256: String::new(),
            created_by: env!("CARGO_PKG_VERSION").to_string(),
            signature: None,
        };
        let path = aot::artifact_path(package.dir(), &target);
        let bytes = aot::write(&path, header, &code, options.key.as_ref())?;
        Ok(PrecompileReport {
            path,
            target,
            wasm_bytes: wasm.len() as u64,
            artifact_bytes: bytes,
            preinitialized: options.preinitialize,
            signed: options.key.is_some(),
            snapshot_time,
            compile_time,
        })
    }

    /// Runs the plugin's `_initialize` and model load in the sandbox, then
    /// snapshots the instance into a new module (with wasmtime-wizer).
    #[cfg(feature = "compiler")]
    fn preinitialize(&self, package: &VerifiedPackage) -> Result<Vec<u8>> {
        let name = &package.manifest().plugin.name;
        let failed = |message: String| Error::Snapshot { plugin: name.clone(), message };
        if let Some(reason) = package.snapshot_blocker()? {
            return Err(failed(format!("{reason}; precompile it without a snapshot")));
        }
        let wizer = wasmtime_wizer::Wizer::new();
        let (context, instrumented) = wizer.instrument(package.wasm()?).map_err(|e| failed(format!("{e:#}")))?;
        // This module runs once, to load the models: compile it quickly rather than well.
        let mut config = wasmtime_config(None)?;
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let module = self.compile_with(&engine, name, &instrumented)?;
        sandbox::check_exports(name, &module, false)?;
        let pre = sandbox::linker(&engine)?.instantiate_pre(&module).map_err(|e| Error::instantiate(name, e))?;
        let ctx = crate::sandbox::CallContext {
            plugin: name.clone(),
            limits: package.manifest().limits.sandbox(),
            epoch_tick: self.epoch_tick(),
        };
        // The load runs under its deadline, so this engine needs its own epoch ticker.
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(self.epoch_tick());
                    engine.increment_epoch();
                }
            });
            let snapshot = crate::sandbox::Instance::new(&pre, ctx, Some(&package.load_payload()), None)
                .and_then(|mut instance| instance.snapshot(&wizer, &context));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            snapshot
        })
    }

    #[cfg(feature = "compiler")]
    fn compile_with(&self, engine: &Engine, plugin: &str, wasm: &[u8]) -> Result<Module> {
        Module::from_binary(engine, wasm).map_err(|e| Error::invalid_wasm(plugin, e))
    }
}

/// How to precompile a plugin ([`Runtime::precompile`]).
#[derive(Debug, Clone, Default)]
pub struct PrecompileOptions {
    /// The device's target triple, such as `aarch64-unknown-linux-gnu`. Default: this host's.
    pub target: Option<String>,
    /// Snapshot the plugin with its models loaded, so instances start ready.
    pub preinitialize: bool,
    /// Sign the artifact, for hosts that require signed plugins.
    pub key: Option<ed25519_dalek::SigningKey>,
}

/// What [`Runtime::precompile`] wrote.
#[derive(Debug, Clone)]
pub struct PrecompileReport {
    /// The artifact.
    pub path: PathBuf,
    /// The target it is for.
    pub target: String,
    /// The size of the wasm that was compiled (the snapshot, if pre-initialized).
    pub wasm_bytes: u64,
    /// The size of the artifact.
    pub artifact_bytes: u64,
    /// Whether it is a pre-initialized snapshot.
    pub preinitialized: bool,
    /// Whether it is signed.
    pub signed: bool,
    /// Time spent loading the models and taking the snapshot.
    pub snapshot_time: Duration,
    /// Time spent in Cranelift for the target.
    pub compile_time: Duration,
}
