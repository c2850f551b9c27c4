//! The engine: one wasmtime `Engine` and `Linker` shared by every plugin,
//! the epoch ticker that enforces deadlines, and the compiled-module cache.

pub mod cache;

use crate::plugin::{Package, Plugin, TrustPolicy, VerifiedPackage};
use crate::sandbox::{self, HostState};
use crate::{Error, Result};
pub use cache::{CacheOutcome, ModuleCache};
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
    pub trust: TrustPolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: ModuleCache::default_dir(),
            epoch_tick: Duration::from_millis(2),
            trust: TrustPolicy::default(),
        }
    }
}

/// What loading a plugin did, for logs and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// How the module was obtained.
    pub cache: CacheOutcome,
    /// Time spent compiling or deserializing.
    pub module_time: Duration,
    /// Time spent instantiating the first instance and loading its models.
    pub instantiate_time: Duration,
    /// A cache problem that did not stop the load (a corrupt entry, a full disk).
    pub cache_warning: Option<String>,
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
    // Dropping the sender stops the ticker thread.
    _ticker: mpsc::Sender<()>,
}

impl Runtime {
    /// Builds the engine (SIMD on, epoch interruption on) and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.wasm_simd(true);
        // Guests may use relaxed SIMD; keep its results the same on every host.
        wasm.wasm_relaxed_simd(true);
        wasm.relaxed_simd_deterministic(true);
        #[cfg(feature = "compiler")]
        wasm.cranelift_opt_level(wasmtime::OptLevel::Speed);
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
                _ticker: stop,
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The module cache, if enabled.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.inner.cache.as_ref()
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
    pub fn verify(&self, dir: impl AsRef<Path>) -> Result<VerifiedPackage> {
        Package::open(dir)?.verify_with(&self.inner.trust)
    }

    /// Whether loading this package would deserialize from the cache (no compilation).
    pub fn is_cached(&self, package: &VerifiedPackage) -> bool {
        self.cache().is_some_and(|c| c.entry_path(self.engine(), package.wasm_sha256()).is_file())
    }

    /// Compiles (or deserializes) the module, checks its exports, and loads a first instance.
    pub fn load_verified(&self, package: VerifiedPackage) -> Result<Plugin> {
        let started = Instant::now();
        let (module, cache, cache_warning) = self.module(&package)?;
        let module_time = started.elapsed();
        let name = &package.manifest().plugin.name;
        sandbox::check_exports(name, &module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Instantiate { plugin: name.clone(), message: format!("{e:#}") })?;
        let report = LoadReport { cache, module_time, instantiate_time: Duration::ZERO, cache_warning };
        Plugin::new(self, package, pre, report)
    }

    /// The compiled module for a package, from the cache when possible.
    pub fn module(&self, package: &VerifiedPackage) -> Result<(Module, CacheOutcome, Option<String>)> {
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
        let module = self.compile(name, package.wasm())?;
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
        Module::from_binary(self.engine(), wasm)
            .map_err(|e| Error::InvalidWasm { plugin: plugin.to_string(), message: format!("{e:#}") })
    }

    #[cfg(not(feature = "compiler"))]
    fn compile(&self, plugin: &str, _wasm: &[u8]) -> Result<Module> {
        Err(Error::InvalidWasm {
            plugin: plugin.to_string(),
            message: "this host is built without a compiler and no precompiled module is cached".into(),
        })
    }
}
