//! edgecascade: run sandboxed wasm ML plugins on edge devices, and escalate to
//! a cloud large model when the small local model is unsure.
//!
//! A *plugin* is a package directory: a `plugin.toml` manifest, a
//! `wasm32-wasip1` module built with the `edgecascade-guest` SDK, and its
//! ONNX models. The host verifies the package's hashes, compiles the module
//! once (cached on disk), and runs it in a sandbox: a memory cap, a deadline
//! per call, and no files, network, environment or arguments.
//!
//! # A first plugin
//!
//! A plugin is usually Rust built with the guest SDK, but any module that
//! speaks the ABI will do. This one is a few lines of WAT: it answers "yes"
//! with confidence 0.9, and spins forever on the input "spin". The host packs
//! it (every file gets a sha256 in the manifest), loads it, and serves it; the
//! spinning call is stopped at the manifest's 100 ms deadline, and the plugin
//! serves the next call from a fresh instance.
//!
//! ```
//! use edgecascade::{Error, Input, Local, Runtime, RuntimeConfig};
//!
//! // Frames are a status byte and JSON; a call returns (pointer << 32) | length.
//! let wasm = wat::parse_str(r#"(module
//!     (memory (export "memory") 1)
//!     (data (i32.const 0) "\00{}")
//!     (data (i32.const 16) "\00{\"label\":\"yes\",\"confidence\":0.9}")
//!     (data (i32.const 64) "\00{\"messages\":[{\"role\":\"user\",\"content\":\"yes or no?\"}]}")
//!     (func (export "_initialize"))
//!     (func (export "edgecascade_abi_version") (result i32) (i32.const 1))
//!     (func (export "edgecascade_alloc") (param i32) (result i32) (i32.const 1024))
//!     (func (export "edgecascade_load") (param i32 i32) (result i64) (i64.const 3))
//!     (func (export "edgecascade_infer") (param $input i32) (param i32) (result i64)
//!         ;; The input frame is "text/plain\n" and the text: byte 11 is its first letter.
//!         (if (i32.eq (i32.load8_u offset=11 (local.get $input)) (i32.const 115))
//!             (then (loop br 0)))
//!         (i64.const 0x10_0000_0021))
//!     (func (export "edgecascade_prompt") (param i32 i32) (result i64) (i64.const 0x40_0000_0036))
//!     (func (export "edgecascade_parse_reply") (param i32 i32) (result i64) (i64.const 0x10_0000_0021)))"#)?;
//!
//! let src = tempfile::tempdir()?;
//! std::fs::write(src.path().join("yes.wasm"), &wasm)?;
//! std::fs::write(src.path().join("plugin.toml"), r#"
//!     [plugin]
//!     name = "yes"
//!     version = "1.0.0"
//!     abi_version = 1
//!     labels = ["no", "yes"]
//!
//!     [wasm]
//!     file = "yes.wasm"
//!
//!     [limits]
//!     memory = "16 MiB"
//!     deadline = "100ms"
//! "#)?;
//! let package = src.path().join("package");
//! edgecascade::plugin::pack(&src.path().join("plugin.toml"), &[], &package)?;
//!
//! // One runtime per process; here without the on-disk module cache.
//! let runtime = Runtime::new(RuntimeConfig { cache_dir: None, ..Default::default() })?;
//! let plugin = runtime.load(&package)?;
//! match plugin.infer(&Input::text("is this on?"))? {
//!     Local::Answered(answer) => assert_eq!((answer.label.as_deref(), answer.confidence), (Some("yes"), 0.9)),
//!     Local::Beyond { reason } => panic!("declined: {reason}"),
//! }
//!
//! // A limit, hit: the call ends at the deadline with a typed error...
//! let spun = plugin.infer(&Input::text("spin"));
//! assert!(matches!(spun, Err(Error::Deadline { .. })), "{spun:?}");
//! // ...the faulted instance is dropped, and the next call gets a fresh one.
//! assert!(plugin.infer(&Input::text("are you there?")).is_ok());
//! assert_eq!(plugin.pool_stats().discarded, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A real plugin ships an ONNX model and runs it with tract inside the
//! sandbox; loading one looks the same:
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
//! [`plugin::manifest`]. How the modules layer is in the README's
//! "Architecture" section, and a test keeps the layering true.

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
#[cfg(feature = "serve")]
pub mod serve;
pub mod spool;

#[cfg(feature = "inspect")]
pub mod inspect;
mod layers;

pub use edgecascade_abi::{ABI_VERSION, Answer, ChatMessage, Prompt, Role, Score, Tensor, TensorData};
pub use engine::{CacheOutcome, LoadReport, ModuleCache, PrecompileOptions, PrecompileReport, Runtime, RuntimeConfig};
pub use error::{Error, Result, TrapCode};
pub use metrics::Metrics;
pub use plugin::{Input, Local, Manifest, Package, Plugin, PoolStats, VerifiedPackage};
pub use router::{CascadeConfig, Mode, Reason, Reply, Router, RouterBuilder, Source};

/// The README's Rust snippets, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
