//! edgecascade: run sandboxed wasm ML plugins on edge devices, and escalate to
//! a cloud large model when the small local model is unsure.
//!
//! A *plugin* is a package directory: a `plugin.toml` manifest, a
//! `wasm32-wasip1` module built with the `edgecascade-guest` SDK, and its
//! ONNX models. The host verifies the package's hashes, compiles the module
//! once (cached on disk), and runs it in a sandbox: a memory cap, a deadline
//! per call, and no files, network, environment or arguments.
//!
//! ```no_run
//! use edgecascade::{Input, Local, Runtime};
//!
//! let runtime = Runtime::new(Default::default())?;
//! let plugin = runtime.load("target/plugins/news-topic")?;
//! match plugin.infer(&Input::text("The central bank raised interest rates again"))? {
//!     Local::Answered(a) => println!("{:?} ({:.2})", a.label, a.confidence),
//!     Local::Beyond { reason } => println!("beyond the plugin: {reason}"),
//! }
//! # Ok::<(), edgecascade::Error>(())
//! ```
//!
//! # Core types
//!
//! - [`Runtime`]: one wasmtime engine, linker and module cache per process.
//!   Cheap to clone. Loading a plugin uses its precompiled artifact for this
//!   target if it has one ([`Runtime::precompile`], `edgecascade compile`:
//!   no compiler, no model parsing), else compiles its module (10-25 s for a
//!   tract guest) or deserializes it from the cache (tens of ms).
//! - [`Plugin`]: a loaded plugin with a pool of warm instances. Cheap to
//!   clone and `Send + Sync`; each call takes an instance from the pool.
//! - [`Error`]: every failure, named by cause: [`Error::Deadline`],
//!   [`Error::MemoryCap`], [`Error::GuestPanic`], [`Error::HashMismatch`],
//!   [`Error::AbiMismatch`], [`Error::ModelRejected`] and the rest. After a
//!   guest fault the plugin keeps serving with a fresh instance.
//!
//! The guest ABI is specified in `guest/ABI.md`; the manifest in
//! [`plugin::manifest`].

#![deny(missing_docs)]

pub mod cloud;
pub mod distill;
pub mod engine;
mod error;
pub mod eval;
#[cfg(feature = "fleet")]
pub mod fleet;
mod fsutil;
pub mod gate;
pub mod metrics;
pub mod plugin;
pub mod router;
mod sandbox;
pub mod serve;
pub mod spool;

#[cfg(feature = "inspect")]
pub mod inspect;

pub use edgecascade_abi::{ABI_VERSION, Answer, ChatMessage, Prompt, Role, Score, Tensor, TensorData};
pub use engine::{CacheOutcome, LoadReport, ModuleCache, PrecompileOptions, PrecompileReport, Runtime, RuntimeConfig};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use plugin::{Input, Local, Manifest, Package, Plugin, PoolStats, VerifiedPackage};
pub use router::{CascadeConfig, Mode, Reason, Reply, Router, Source};
