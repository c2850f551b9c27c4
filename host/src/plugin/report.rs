//! What loading a plugin did: how its module was obtained and what it cost.

use std::time::Duration;

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Deserialized from a valid cache entry; no compilation.
    Hit,
    /// Compiled, then stored.
    Compiled,
    /// A cache entry was corrupt; it was removed and the module recompiled.
    Rebuilt,
    /// Compiled; caching is off or the entry could not be written.
    Uncached,
    /// Deserialized from the package's precompiled artifact for this host; no compilation.
    Precompiled,
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
    /// Whether the module is a snapshot with its models already loaded, so
    /// new instances skip `_initialize` and the model load.
    pub preinitialized: bool,
}
