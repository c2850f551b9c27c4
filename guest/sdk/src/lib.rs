//! The SDK for edgecascade plugins.
//!
//! A plugin is a `wasm32-wasip1` reactor module that the edgecascade host runs
//! in a sandbox. It owns a small model and everything around it: it loads the
//! model bytes the host hands it, answers inputs with a confidence, says when
//! an input is beyond it, phrases the task for a large model, and reads the
//! large model's reply back into the same answer shape.
//!
//! Write one type that implements [`Plugin`] and export it with
//! [`export_plugin!`]; the macro generates the ABI (see `guest/ABI.md`).
//!
//! ```no_run
//! use edgecascade_guest::{export_plugin, Answer, Error, Input, LoadContext, Plugin, Prompt};
//!
//! struct Shouty { labels: Vec<String> }
//!
//! impl Plugin for Shouty {
//!     fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
//!         Ok(Shouty { labels: ctx.labels().to_vec() })
//!     }
//!     fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
//!         let text = input.text()?;
//!         let loud = text.chars().filter(|c| c.is_uppercase()).count() as f32
//!             / text.chars().count().max(1) as f32;
//!         Ok(Answer::from_probs(&self.labels, &[1.0 - loud, loud]))
//!     }
//!     fn prompt(&self, input: &Input<'_>) -> Result<Prompt, Error> {
//!         Ok(edgecascade_guest::classify::prompt(
//!             "Is this text shouting?", &self.labels, input.text()?,
//!         ))
//!     }
//!     fn parse_reply(&self, reply: &str) -> Result<Answer, Error> {
//!         edgecascade_guest::classify::parse_reply(&self.labels, reply)
//!     }
//! }
//!
//! export_plugin!(Shouty);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip1` and
//! `-C target-feature=+simd128` (tract's wasm kernels need it), with
//! `crate-type = ["cdylib"]` and `panic = "abort"`.

pub use edgecascade_abi::{
    ABI_MINOR, ABI_VERSION, Answer, ChatMessage, ErrorKind, Prompt, Role, Score, Tensor, TensorData, content_type,
};

pub mod classify;
#[cfg(feature = "onnx")]
pub mod contrib;
#[cfg(any(feature = "onnx", feature = "wasi-nn"))]
pub mod model;
#[cfg(feature = "wasi-nn")]
pub mod nn;
pub mod npy;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "text")]
pub mod text;

#[doc(hidden)]
pub mod __rt;

use edgecascade_abi::{FileKind, LoadRequest};

/// An error a plugin reports to the host. The host surfaces its kind and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The class of failure.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

impl Error {
    /// The input is malformed.
    pub fn bad_input(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::BadInput, message: message.into() }
    }
    /// A model could not be loaded or run.
    pub fn model(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Model, message: message.into() }
    }
    /// The large model's reply could not be understood.
    pub fn bad_reply(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::BadReply, message: message.into() }
    }
    /// Anything else.
    pub fn internal(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Internal, message: message.into() }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// What the host hands a plugin at load: its manifest's name, version,
/// labels and `[config]` table, and the bytes of its model and asset files.
pub struct LoadContext<'a> {
    request: LoadRequest,
    files: Vec<&'a [u8]>,
}

impl<'a> LoadContext<'a> {
    #[doc(hidden)]
    pub fn new(request: LoadRequest, files: Vec<&'a [u8]>) -> Self {
        LoadContext { request, files }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.request.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.request.version
    }

    /// The labels, in model output order.
    pub fn labels(&self) -> &[String] {
        &self.request.labels
    }

    /// The ABI minor of the host that loaded the plugin (0 when it did not
    /// say). A plugin that writes a field added in a later minor checks this
    /// first: a minor-0 host refuses fields it does not know (see `guest/ABI.md`).
    pub fn host_abi_minor(&self) -> u32 {
        self.request.host_minor()
    }

    /// The manifest's `[config]` table as JSON.
    pub fn config(&self) -> &serde_json::Value {
        &self.request.config
    }

    /// The `[config]` table decoded into `T`.
    pub fn config_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.request.config.clone()).map_err(|e| Error::bad_input(format!("plugin config: {e}")))
    }

    /// The bytes of the model named `name` in the manifest. A model the host
    /// keeps in its shared runtime ([`model_in_runtime`](LoadContext::model_in_runtime))
    /// has no bytes here: reach it with [`nn::Graph::load_by_name`](crate::nn::Graph::load_by_name).
    pub fn model(&self, name: &str) -> Result<&'a [u8], Error> {
        if self.model_in_runtime(name) {
            return Err(Error::bad_input(format!(
                "model {name:?} is loaded in the host's shared runtime: reach it with wasi-nn's load_by_name"
            )));
        }
        self.file(name, FileKind::Model)
    }

    /// Whether the manifest lists a model named `name` (its bytes here, or in the host's runtime).
    pub fn has_model(&self, name: &str) -> bool {
        self.file(name, FileKind::Model).is_ok()
    }

    /// Whether the model named `name` is held by the host's shared wasi-nn
    /// runtime rather than handed over as bytes: so it is for a plugin that
    /// imports wasi-nn (ABI minor 2).
    pub fn model_in_runtime(&self, name: &str) -> bool {
        self.request.files.iter().any(|f| f.name == name && f.kind == FileKind::Model && f.runtime)
    }

    /// The bytes of the asset named `name` in the manifest.
    pub fn asset(&self, name: &str) -> Result<&'a [u8], Error> {
        self.file(name, FileKind::Asset)
    }

    /// An asset as UTF-8 text.
    pub fn asset_str(&self, name: &str) -> Result<&'a str, Error> {
        std::str::from_utf8(self.asset(name)?)
            .map_err(|e| Error::bad_input(format!("asset {name:?} is not UTF-8: {e}")))
    }

    fn file(&self, name: &str, kind: FileKind) -> Result<&'a [u8], Error> {
        self.request
            .files
            .iter()
            .zip(&self.files)
            .find(|(entry, _)| entry.name == name && entry.kind == kind)
            .map(|(_, bytes)| *bytes)
            .ok_or_else(|| {
                let what = if kind == FileKind::Model { "model" } else { "asset" };
                Error::bad_input(format!("the manifest lists no {what} named {name:?}"))
            })
    }
}

/// One input: a content type and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    content_type: &'a str,
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// An input from its parts.
    pub fn new(content_type: &'a str, data: &'a [u8]) -> Self {
        Input { content_type, data }
    }

    /// The content type, such as `text/plain`; empty when the host sent none.
    pub fn content_type(&self) -> &'a str {
        self.content_type
    }

    /// The raw payload.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The payload as text; fails unless the content type is text (or absent) and the bytes are UTF-8.
    pub fn text(&self) -> Result<&'a str, Error> {
        let ct = self.content_type.split(';').next().unwrap_or("").trim();
        if !(ct.is_empty() || ct == content_type::TEXT) {
            return Err(Error::bad_input(format!("expected text/plain input, got {ct:?}")));
        }
        std::str::from_utf8(self.data).map_err(|e| Error::bad_input(format!("input is not UTF-8: {e}")))
    }

    /// The payload decoded as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(self.data).map_err(|e| Error::bad_input(format!("input is not the expected JSON: {e}")))
    }
}

/// A plugin: one small model and everything its task needs around it.
///
/// The host calls [`load`](Plugin::load) once per instance, then
/// [`infer`](Plugin::infer) many times. When it escalates an input, it asks
/// [`prompt`](Plugin::prompt) for the chat messages, sends them to a large
/// model, and hands the reply to [`parse_reply`](Plugin::parse_reply).
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its models, assets and config. Runs once per instance.
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error>;

    /// Returns a reason when the input is beyond this plugin (too long, the
    /// wrong language or content type); the host then escalates without
    /// trusting a local answer. The default accepts everything.
    fn beyond(&self, input: &Input<'_>) -> Option<String> {
        let _ = input;
        None
    }

    /// Answers one input, with a confidence in `[0, 1]`.
    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error>;

    /// Phrases the task for a large model. The default says the plugin cannot escalate.
    fn prompt(&self, input: &Input<'_>) -> Result<Prompt, Error> {
        let _ = input;
        Err(Error::internal("this plugin does not escalate"))
    }

    /// Reads a large model's reply into the same answer shape as [`infer`](Plugin::infer).
    fn parse_reply(&self, reply: &str) -> Result<Answer, Error> {
        let _ = reply;
        Err(Error::internal("this plugin does not escalate"))
    }
}

/// Exports a [`Plugin`] type as an edgecascade ABI v1 module.
///
/// Use it once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<$crate::__rt::State<$plugin>> =
                    const { ::core::cell::RefCell::new($crate::__rt::State::new()) };
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn _initialize() {
                $crate::__rt::initialize();
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_abi_version() -> i32 {
                $crate::ABI_VERSION as i32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_abi_minor() -> i32 {
                $crate::ABI_MINOR as i32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_alloc(len: i32) -> i32 {
                $crate::__rt::alloc(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_load(ptr: i32, len: i32) -> i64 {
                STATE.with(|s| s.borrow_mut().load(ptr, len))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_infer(ptr: i32, len: i32) -> i64 {
                STATE.with(|s| s.borrow_mut().infer(ptr, len))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_prompt(ptr: i32, len: i32) -> i64 {
                STATE.with(|s| s.borrow_mut().prompt(ptr, len))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn edgecascade_parse_reply(ptr: i32, len: i32) -> i64 {
                STATE.with(|s| s.borrow_mut().parse_reply(ptr, len))
            }
        };
    };
}
