//! The one error type of the library: every failure names its cause.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong loading or running a plugin.
///
/// Variants name the cause, so callers can match on them: a guest that ran
/// past its deadline is [`Error::Deadline`], not a generic trap. After any
/// guest fault the plugin stays usable: the faulty instance is dropped and
/// the next call gets a fresh one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// `plugin.toml` is not a valid manifest.
    #[error("bad manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },

    /// A package file's sha256 does not match its manifest.
    #[error("hash mismatch for {file}: manifest says {expected}, file has {actual}")]
    HashMismatch {
        /// The file, relative to the package.
        file: String,
        /// The hash in the manifest.
        expected: String,
        /// The hash of the file as it is.
        actual: String,
    },

    /// The host requires signed plugins and this one is not signed.
    #[error("plugin {plugin} is not signed, and this host only loads signed plugins")]
    Unsigned {
        /// The plugin.
        plugin: String,
    },

    /// The plugin is signed by a key the host does not trust.
    #[error("plugin {plugin} is signed by {key}, which this host does not trust")]
    UntrustedKey {
        /// The plugin.
        plugin: String,
        /// The signer's public key, hex.
        key: String,
    },

    /// The signature is malformed or does not match the manifest (the package was changed after signing).
    #[error("plugin {plugin} has a bad signature: {detail}")]
    BadSignature {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        detail: String,
    },

    /// The plugin speaks another ABI version than this host.
    #[error("plugin {plugin} speaks guest ABI v{found}; this host speaks v{expected}")]
    AbiMismatch {
        /// The plugin.
        plugin: String,
        /// The host's ABI version.
        expected: u32,
        /// The plugin's.
        found: i64,
    },

    /// The bytes are not a valid WebAssembly module, or it cannot be compiled.
    #[error("invalid wasm in {plugin}: {message}")]
    InvalidWasm {
        /// The plugin.
        plugin: String,
        /// The compiler's or validator's message.
        message: String,
        /// Wasmtime's error, when it came from wasmtime (its chain, to inspect or downcast).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The module lacks an export the ABI requires, or it has the wrong type.
    #[error("plugin {plugin} does not export {export} ({detail})")]
    MissingExport {
        /// The plugin.
        plugin: String,
        /// The export's name.
        export: String,
        /// Missing, or the type it has.
        detail: String,
    },

    /// The module imports something the sandbox does not provide.
    #[error("plugin {plugin} cannot be instantiated: {message}")]
    Instantiate {
        /// The plugin.
        plugin: String,
        /// Wasmtime's message, naming the import.
        message: String,
        /// Wasmtime's error (its chain, to inspect or downcast).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The guest could not load a model; tract's message names the op or node.
    #[error("plugin {plugin} rejected its model: {message}")]
    ModelRejected {
        /// The plugin.
        plugin: String,
        /// The guest's message.
        message: String,
    },

    /// A guest call ran past its deadline and was interrupted.
    #[error("plugin {plugin} exceeded its {deadline:?} deadline")]
    Deadline {
        /// The plugin.
        plugin: String,
        /// The deadline that was hit.
        deadline: Duration,
    },

    /// The guest tried to grow its memory past the cap.
    #[error("plugin {plugin} hit its memory cap of {cap} bytes")]
    MemoryCap {
        /// The plugin.
        plugin: String,
        /// The cap.
        cap: u64,
    },

    /// The guest panicked.
    #[error("plugin {plugin} panicked: {message}")]
    GuestPanic {
        /// The plugin.
        plugin: String,
        /// The panic message the guest reported.
        message: String,
    },

    /// The guest trapped for another reason (stack overflow, out-of-bounds access, exit).
    #[error("plugin {plugin} trapped: {trap}")]
    GuestTrap {
        /// The plugin.
        plugin: String,
        /// The cause, to match on.
        code: TrapCode,
        /// The cause in words, with wasmtime's detail.
        trap: String,
    },

    /// The guest returned bytes that break the ABI.
    #[error("plugin {plugin} returned malformed output: {detail}")]
    MalformedOutput {
        /// The plugin.
        plugin: String,
        /// What is wrong with it.
        detail: String,
    },

    /// The guest reported an error of its own (for example bad input).
    #[error("plugin {plugin} failed: {kind:?}: {message}")]
    Guest {
        /// The plugin.
        plugin: String,
        /// The class of error the guest reported.
        kind: edgecascade_abi::ErrorKind,
        /// Its message.
        message: String,
    },

    /// A precompiled artifact does not fit this host: it was built for another
    /// target, wasmtime version, engine settings or package, or it is corrupt.
    /// It is refused, never loaded.
    #[error("precompiled artifact {path} refused: {reason}")]
    ArtifactMismatch {
        /// The artifact.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    /// A precompiled artifact is native code that this host has no reason to
    /// trust: it is not signed by a trusted key, and the embedder did not opt
    /// in to the package's native code ([`crate::RuntimeConfig::trust_native_code`]).
    /// A host with a compiler compiles the package's wasm instead and says so
    /// in [`crate::LoadReport::cache_warning`]; a runtime-only host refuses.
    #[error("precompiled artifact {path} is not trusted: {reason}")]
    UntrustedNativeCode {
        /// The artifact.
        path: PathBuf,
        /// Why not, and what would make it trusted.
        reason: String,
    },

    /// Every instance of the plugin stayed busy until the request's deadline.
    #[error("all {instances} instances of plugin {plugin} stayed busy for {waited:?}, the time the request had left")]
    Busy {
        /// The plugin.
        plugin: String,
        /// Its instance limit (`limits.instances`).
        instances: usize,
        /// How long the request waited for one.
        waited: Duration,
    },

    /// A plugin imports wasi-nn, and the shared inference runtime it needs
    /// could not be found, verified or linked.
    #[error("plugin {plugin} imports wasi-nn, but the shared runtime at {path} cannot serve it: {message}")]
    NnRuntime {
        /// The plugin.
        plugin: String,
        /// Where the runtime package was looked for.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },

    /// Pre-initializing a plugin (loading its models, then snapshotting the instance) failed.
    #[error("could not pre-initialize plugin {plugin}: {message}")]
    Snapshot {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        message: String,
    },

    /// A package cannot stand in for the live one: it is another plugin, or
    /// the same version (a promotion must change what serves).
    #[error("{candidate} cannot replace {live}: {reason}")]
    NotACandidate {
        /// The live plugin, `name version`.
        live: String,
        /// The candidate, `name version`.
        candidate: String,
        /// Why not.
        reason: String,
    },

    /// The distillation loop's trainer could not train: it is missing, it
    /// failed, or its output is not what the loop expects.
    #[error("trainer `{trainer}`: {message}")]
    Trainer {
        /// The trainer's command line.
        trainer: String,
        /// What went wrong, in the trainer's own words where it said any.
        message: String,
    },

    /// The fleet's NATS server could not be reached or refused an operation,
    /// or a fleet name or message is malformed.
    #[error("fleet: {operation}: {message}")]
    Fleet {
        /// What was being done, and to what.
        operation: String,
        /// What went wrong.
        message: String,
    },

    /// A spool directory holds something it cannot have written.
    #[error("spool {path}: {message}")]
    Spool {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A router could not be built for a reloaded plugin (the embedder's
    /// `serve::MakeRouter` failed); the old version keeps serving.
    #[error("building a router for {plugin}: {source}")]
    Router {
        /// The plugin.
        plugin: String,
        /// The embedder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The compiled-module cache could not be used. Loading goes on without it.
    #[error("module cache: {0}")]
    Cache(String),

    /// The wasm engine could not be configured.
    #[error("engine: {0}")]
    Engine(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// Whether this error came from the guest misbehaving (a trap, the
    /// deadline, the memory cap, malformed output), as opposed to the input
    /// or the package.
    pub fn is_guest_fault(&self) -> bool {
        matches!(
            self,
            Error::Deadline { .. }
                | Error::MemoryCap { .. }
                | Error::GuestPanic { .. }
                | Error::GuestTrap { .. }
                | Error::MalformedOutput { .. }
        )
    }
}

impl Error {
    /// [`Error::InvalidWasm`] from wasmtime's error, kept as the source.
    #[cfg(feature = "compiler")]
    pub(crate) fn invalid_wasm(plugin: &str, error: wasmtime::Error) -> Error {
        Error::InvalidWasm { plugin: plugin.to_string(), message: format!("{error:#}"), source: Some(error.into()) }
    }

    /// [`Error::Instantiate`] from wasmtime's error, kept as the source.
    pub(crate) fn instantiate(plugin: &str, error: wasmtime::Error) -> Error {
        Error::Instantiate { plugin: plugin.to_string(), message: format!("{error:#}"), source: Some(error.into()) }
    }
}

/// Why a guest trapped ([`Error::GuestTrap`]): wasmtime's trap codes, as
/// this crate's own type, so that a wasmtime upgrade does not change the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrapCode {
    /// The guest's call stack overflowed.
    StackOverflow,
    /// A load or store outside linear memory.
    MemoryOutOfBounds,
    /// A table access or indirect call outside the table.
    TableOutOfBounds,
    /// An indirect call to a null table entry.
    IndirectCallToNull,
    /// An indirect call with the wrong signature.
    BadSignature,
    /// Integer overflow, or a float that does not convert to an integer.
    IntegerOverflow,
    /// Integer division by zero.
    IntegerDivisionByZero,
    /// An `unreachable` instruction, with no panic message before it.
    Unreachable,
    /// The guest called WASI `proc_exit` with this status.
    Exit(i32),
    /// Any other trap (the message says which).
    Other,
}

impl TrapCode {
    /// The code of a wasmtime trap.
    pub(crate) fn of(trap: &wasmtime::Trap) -> TrapCode {
        use wasmtime::Trap;
        match trap {
            Trap::StackOverflow => TrapCode::StackOverflow,
            Trap::MemoryOutOfBounds | Trap::HeapMisaligned => TrapCode::MemoryOutOfBounds,
            Trap::TableOutOfBounds => TrapCode::TableOutOfBounds,
            Trap::IndirectCallToNull => TrapCode::IndirectCallToNull,
            Trap::BadSignature => TrapCode::BadSignature,
            Trap::IntegerOverflow | Trap::BadConversionToInteger => TrapCode::IntegerOverflow,
            Trap::IntegerDivisionByZero => TrapCode::IntegerDivisionByZero,
            Trap::UnreachableCodeReached => TrapCode::Unreachable,
            _ => TrapCode::Other,
        }
    }
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
