//! The C API of the edgecascade host, for device apps in C and C++.
//!
//! The header, `capi/include/edgecascade.h`, is generated from this file by
//! cbindgen and committed. Handles are opaque; every fallible call returns an
//! [`EcStatus`], with the message from [`ec_last_error`]; no panic crosses the
//! boundary. `capi/examples/classify.c` shows the whole life cycle.

use edgecascade::cloud::{OpenAi, Resilient, RetryPolicy};
use edgecascade::{CascadeConfig, Error, Input, Metrics, Mode, Plugin, Reply, Router, Runtime, RuntimeConfig, Source};
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

/// The outcome of a call. On anything but `EC_STATUS_OK`, `ec_last_error()` says why.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcStatus {
    /// Success.
    Ok = 0,
    /// A null pointer, or a string that is not UTF-8.
    InvalidArgument = 1,
    /// A file could not be read or written.
    Io = 2,
    /// The package is bad: its manifest, a file's hash, or its signature.
    BadPackage = 3,
    /// The plugin's code is bad: invalid wasm, a missing export, another ABI
    /// version, a precompiled artifact for another target or host, or a model
    /// the plugin rejected.
    BadPlugin = 4,
    /// The guest misbehaved: a trap, its deadline, its memory cap, or malformed output.
    GuestFault = 5,
    /// The engine or cache failed.
    Engine = 6,
    /// A bug: a panic inside the library, caught at the boundary.
    Panic = 7,
}

/// Where a reply's answer came from.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcSource {
    /// The local model, inside the sandbox.
    Local = 0,
    /// The cloud large model.
    Cloud = 1,
    /// The local model, after the cloud failed (the reply is degraded).
    LocalFallback = 2,
}

/// The host runtime: an engine, its module cache and its epoch ticker. Create one per process.
pub struct EcRuntime(Runtime);

/// A loaded plugin, ready to infer.
pub struct EcPlugin(Plugin);

/// A plugin with its routing policy: answers locally when confident, else asks the cloud.
pub struct EcCascade(Router);

/// One routed answer, with where it came from and why.
pub struct EcReply {
    label: Option<CString>,
    confidence: f32,
    source: EcSource,
    reason: CString,
    degraded: bool,
    json: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: String) {
    let message = CString::new(message.replace('\0', " ")).expect("no interior NUL after replace");
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

fn status_of(error: &Error) -> EcStatus {
    match error {
        Error::Io { .. } => EcStatus::Io,
        Error::Manifest { .. }
        | Error::HashMismatch { .. }
        | Error::Unsigned { .. }
        | Error::UntrustedKey { .. }
        | Error::BadSignature { .. } => EcStatus::BadPackage,
        Error::AbiMismatch { .. }
        | Error::InvalidWasm { .. }
        | Error::MissingExport { .. }
        | Error::Instantiate { .. }
        | Error::ModelRejected { .. }
        | Error::ArtifactMismatch { .. }
        | Error::UntrustedNativeCode { .. }
        | Error::Snapshot { .. }
        | Error::NnRuntime { .. } => EcStatus::BadPlugin,
        e if e.is_guest_fault() => EcStatus::GuestFault,
        Error::Guest { .. } => EcStatus::GuestFault,
        _ => EcStatus::Engine,
    }
}

/// Runs `f`, turning its error or panic into a status and the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), (EcStatus, String)>) -> EcStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => EcStatus::Ok,
        Ok(Err((status, message))) => {
            set_error(message);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(format!("internal error (a bug, please report it): {what}"));
            EcStatus::Panic
        }
    }
}

fn lib_err(error: Error) -> (EcStatus, String) {
    (status_of(&error), error.to_string())
}

fn invalid(message: impl Into<String>) -> (EcStatus, String) {
    (EcStatus::InvalidArgument, message.into())
}

/// Reads a required C string argument.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, (EcStatus, String)> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| invalid(format!("{what} is not UTF-8")))
}

/// Moves `value` to the heap and hands it out through `out`.
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn give<T>(out: *mut *mut T, value: T) -> Result<(), (EcStatus, String)> {
    if out.is_null() {
        return Err(invalid("the out pointer is NULL"));
    }
    // SAFETY: checked non-null; the caller passes a writable pointer.
    unsafe { *out = Box::into_raw(Box::new(value)) };
    Ok(())
}

/// Borrows a handle.
///
/// # Safety
/// `ptr` is null or a live handle of type `T` made by this library.
unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, (EcStatus, String)> {
    // SAFETY: the caller passes a live handle or null.
    unsafe { ptr.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// The message of the last failed call on this thread ("" if none). Valid
/// until the next failing call on this thread; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn ec_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library's version, such as "0.1.0". Static; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn ec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Creates a runtime with the default options and this cache: `cache_dir` is
/// where compiled plugins are cached; NULL uses the default
/// ($EDGECASCADE_CACHE_DIR, else ~/.cache/edgecascade). No keys are trusted,
/// so precompiled artifacts are not run (ec_runtime_new_with() sets trust).
/// Free it with ec_runtime_free() after every plugin made from it.
///
/// # Safety
/// `cache_dir` is NULL or a NUL-terminated string; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_runtime_new(cache_dir: *const c_char, out: *mut *mut EcRuntime) -> EcStatus {
    guard(|| {
        let mut config = RuntimeConfig::default();
        if !cache_dir.is_null() {
            // SAFETY: non-null, and the caller passes a NUL-terminated string.
            config.cache_dir = Some(PathBuf::from(unsafe { text(cache_dir, "cache_dir") }?));
        }
        let runtime = Runtime::new(config).map_err(lib_err)?;
        // SAFETY: the caller passes a writable `out`.
        unsafe { give(out, EcRuntime(runtime)) }
    })
}

/// Options for ec_runtime_new_with(). Set `struct_size` to
/// `sizeof(ec_runtime_options)` and zero the rest for the defaults:
///
/// ```c
/// ec_runtime_options options = {0};
/// options.struct_size = sizeof options;
/// ```
///
/// Later versions of the library add fields at the end and read only the
/// fields that fit in the `struct_size` the caller was compiled with, so a
/// program built against this header keeps working.
#[repr(C)]
pub struct EcRuntimeOptions {
    /// `sizeof(ec_runtime_options)`, as the caller was compiled.
    pub struct_size: usize,
    /// Where compiled plugins are cached; NULL uses the default
    /// ($EDGECASCADE_CACHE_DIR, else ~/.cache/edgecascade).
    pub cache_dir: *const c_char,
    /// `trusted_keys_len` ed25519 public keys, hex (as `edgecascade keygen`
    /// writes them to KEY.pub). With any, only packages signed by one of them
    /// load, and a precompiled artifact runs only if one of them signed it.
    /// NULL and 0: no keys, signatures not required.
    pub trusted_keys: *const *const c_char,
    /// The number of `trusted_keys`.
    pub trusted_keys_len: usize,
    /// Trust the native code in these packages: run precompiled artifacts that
    /// no trusted key signed. Default false: such an artifact is passed over for
    /// the package's wasm, or refused (EC_STATUS_BAD_PLUGIN) by a library built
    /// without a compiler.
    pub trust_native_code: bool,
}

/// Creates a runtime with `options` (see ec_runtime_options). Free it with
/// ec_runtime_free() after every plugin made from it.
///
/// # Safety
/// `options` points to an ec_runtime_options whose `struct_size` is set, whose
/// strings are NUL-terminated, and whose `trusted_keys` holds
/// `trusted_keys_len` of them; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_runtime_new_with(options: *const EcRuntimeOptions, out: *mut *mut EcRuntime) -> EcStatus {
    guard(|| {
        // SAFETY: the caller's contract: null or a valid options struct.
        let options = unsafe { handle(options, "options") }?;
        if options.struct_size < std::mem::size_of::<EcRuntimeOptions>() {
            return Err(invalid(format!(
                "options.struct_size is {}, and this library needs at least {} (set it to sizeof(ec_runtime_options))",
                options.struct_size,
                std::mem::size_of::<EcRuntimeOptions>()
            )));
        }
        let mut config = RuntimeConfig::default();
        if !options.cache_dir.is_null() {
            // SAFETY: non-null, and the caller passes a NUL-terminated string.
            config.cache_dir = Some(PathBuf::from(unsafe { text(options.cache_dir, "options.cache_dir") }?));
        }
        let mut keys = Vec::with_capacity(options.trusted_keys_len);
        if options.trusted_keys_len > 0 {
            if options.trusted_keys.is_null() {
                return Err(invalid("options.trusted_keys is NULL but trusted_keys_len is not 0"));
            }
            // SAFETY: the caller passes `trusted_keys_len` string pointers.
            let items = unsafe { std::slice::from_raw_parts(options.trusted_keys, options.trusted_keys_len) };
            for (i, item) in items.iter().enumerate() {
                // SAFETY: each is a NUL-terminated string (checked for NULL by `text`).
                keys.push(unsafe { text(*item, &format!("options.trusted_keys[{i}]")) }?.trim().to_string());
            }
        }
        config.trust = edgecascade::plugin::TrustPolicy::from_hex(keys).map_err(lib_err)?;
        config.trust_native_code = options.trust_native_code;
        let runtime = Runtime::new(config).map_err(lib_err)?;
        // SAFETY: the caller passes a writable `out`.
        unsafe { give(out, EcRuntime(runtime)) }
    })
}

/// Frees a runtime. NULL is ignored.
///
/// # Safety
/// `runtime` is NULL or a handle from ec_runtime_new(), not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_runtime_free(runtime: *mut EcRuntime) {
    if !runtime.is_null() {
        // SAFETY: made by `Box::into_raw` in ec_runtime_new, freed once.
        drop(unsafe { Box::from_raw(runtime) });
    }
}

/// Verifies and loads the plugin package in `package_dir`: its precompiled
/// artifact for this device if it has one, else compiles it (when the library
/// has a compiler). Free it with ec_plugin_free().
///
/// # Safety
/// `runtime` is a live runtime; `package_dir` is a NUL-terminated string; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_plugin_load(
    runtime: *const EcRuntime,
    package_dir: *const c_char,
    out: *mut *mut EcPlugin,
) -> EcStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let (runtime, dir) = unsafe { (handle(runtime, "runtime")?, text(package_dir, "package_dir")?) };
        let plugin = runtime.0.load(dir).map_err(lib_err)?;
        // SAFETY: the caller passes a writable `out`.
        unsafe { give(out, EcPlugin(plugin)) }
    })
}

/// Frees a plugin. NULL is ignored. Cascades made from it keep their own reference.
///
/// # Safety
/// `plugin` is NULL or a handle from ec_plugin_load(), not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_plugin_free(plugin: *mut EcPlugin) {
    if !plugin.is_null() {
        // SAFETY: made by `Box::into_raw` in ec_plugin_load, freed once.
        drop(unsafe { Box::from_raw(plugin) });
    }
}

/// Makes a cascade for `plugin` with the policy in its manifest (threshold,
/// cloud model). `cloud_url` is the base URL of an OpenAI-compatible API, such
/// as "https://api.openai.com/v1" (the key comes from $OPENAI_API_KEY); NULL
/// answers locally only. Free it with ec_cascade_free().
///
/// # Safety
/// `plugin` is a live plugin; `cloud_url` is NULL or a NUL-terminated string; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_cascade_new(
    plugin: *const EcPlugin,
    cloud_url: *const c_char,
    out: *mut *mut EcCascade,
) -> EcStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let plugin = unsafe { handle(plugin, "plugin") }?.0.clone();
        let cloud = if cloud_url.is_null() {
            None
        } else {
            // SAFETY: non-null, and the caller passes a NUL-terminated string.
            let url = unsafe { text(cloud_url, "cloud_url") }?;
            let client: Arc<dyn edgecascade::cloud::CloudClient> =
                Arc::new(Resilient::new(OpenAi::with_url(url), RetryPolicy::default()));
            Some(client)
        };
        let config = CascadeConfig::for_plugin(&plugin);
        let router = Router::new(plugin, cloud, config, Metrics::default());
        // SAFETY: the caller passes a writable `out`.
        unsafe { give(out, EcCascade(router)) }
    })
}

/// Frees a cascade. NULL is ignored.
///
/// # Safety
/// `cascade` is NULL or a handle from ec_cascade_new(), not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_cascade_free(cascade: *mut EcCascade) {
    if !cascade.is_null() {
        // SAFETY: made by `Box::into_raw` in ec_cascade_new, freed once.
        drop(unsafe { Box::from_raw(cascade) });
    }
}

/// Routes one input: the local model answers when confident, else the cloud.
/// `content_type` is "text/plain", "application/json" or another type the
/// plugin reads; `data` holds `len` bytes. A cascade never fails a request
/// that reached it: when neither tier could answer, the reply has no label
/// and ec_reply_json() says why. Free the reply with ec_reply_free().
///
/// # Safety
/// `cascade` is live; `content_type` is a NUL-terminated string; `data` holds
/// `len` readable bytes (may be NULL when `len` is 0); `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_cascade_infer(
    cascade: *const EcCascade,
    content_type: *const c_char,
    data: *const u8,
    len: usize,
    out: *mut *mut EcReply,
) -> EcStatus {
    guard(|| {
        // SAFETY: the caller's contract.
        let (router, content_type) = unsafe { (handle(cascade, "cascade")?, text(content_type, "content_type")?) };
        let bytes: &[u8] = match (data.is_null(), len) {
            (_, 0) => &[],
            (true, _) => return Err(invalid("data is NULL but len is not 0")),
            // SAFETY: the caller passes `len` readable bytes.
            (false, len) => unsafe { std::slice::from_raw_parts(data, len) },
        };
        let reply = router.0.route(&Input::new(content_type, bytes), Mode::Auto);
        // SAFETY: the caller passes a writable `out`.
        unsafe { give(out, EcReply::from(reply)) }
    })
}

/// Routes a NUL-terminated UTF-8 text: ec_cascade_infer() with "text/plain".
///
/// # Safety
/// As ec_cascade_infer(); `text` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_cascade_classify(
    cascade: *const EcCascade,
    text: *const c_char,
    out: *mut *mut EcReply,
) -> EcStatus {
    if text.is_null() {
        return guard(|| Err(invalid("text is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    // SAFETY: the caller's contract, and `bytes` is readable.
    unsafe { ec_cascade_infer(cascade, c"text/plain".as_ptr(), bytes.as_ptr(), bytes.len(), out) }
}

impl From<Reply> for EcReply {
    fn from(reply: Reply) -> EcReply {
        let cstring = |s: String| CString::new(s.replace('\0', " ")).expect("no interior NUL after replace");
        let answer = reply.answer.as_ref();
        EcReply {
            label: answer.and_then(|a| a.label.clone()).map(cstring),
            confidence: answer.map_or(0.0, |a| a.confidence),
            source: match reply.source {
                Source::Local => EcSource::Local,
                Source::Cloud => EcSource::Cloud,
                Source::LocalFallback => EcSource::LocalFallback,
            },
            reason: cstring(reply.reason.as_str().to_string()),
            degraded: reply.degraded,
            json: cstring(serde_json::to_string(&reply).unwrap_or_default()),
        }
    }
}

/// The answer's label, or NULL when there is none. Owned by the reply.
///
/// # Safety
/// `reply` is a live reply.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_label(reply: *const EcReply) -> *const c_char {
    // SAFETY: the caller passes a live reply or null.
    unsafe { reply.as_ref() }.and_then(|r| r.label.as_ref()).map_or(std::ptr::null(), |l| l.as_ptr())
}

/// The answer's confidence in [0, 1] (0 when there is no answer).
///
/// # Safety
/// `reply` is a live reply.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_confidence(reply: *const EcReply) -> f32 {
    // SAFETY: the caller passes a live reply or null.
    unsafe { reply.as_ref() }.map_or(0.0, |r| r.confidence)
}

/// Where the answer came from.
///
/// # Safety
/// `reply` is a live reply.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_source(reply: *const EcReply) -> EcSource {
    // SAFETY: the caller passes a live reply or null.
    unsafe { reply.as_ref() }.map_or(EcSource::Local, |r| r.source)
}

/// Why it came from there: "confident", "low_confidence", "beyond",
/// "local_error", "forced_local", "forced_cloud" or "no_cloud". Owned by the reply.
///
/// # Safety
/// `reply` is a live reply.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_reason(reply: *const EcReply) -> *const c_char {
    // SAFETY: the caller passes a live reply or null.
    unsafe { reply.as_ref() }.map_or(c"".as_ptr(), |r| r.reason.as_ptr())
}

/// Whether the cloud was wanted but failed, so the local answer stands in.
///
/// # Safety
/// `reply` is a live reply.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_degraded(reply: *const EcReply) -> bool {
    // SAFETY: the caller passes a live reply or null.
    unsafe { reply.as_ref() }.is_some_and(|r| r.degraded)
}

/// The whole reply as JSON (scores, latencies, tokens, errors), as `edgecascade serve` returns it. Owned by the reply.
///
/// # Safety
/// `reply` is a live reply.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_json(reply: *const EcReply) -> *const c_char {
    // SAFETY: the caller passes a live reply or null.
    unsafe { reply.as_ref() }.map_or(c"".as_ptr(), |r| r.json.as_ptr())
}

/// Frees a reply. NULL is ignored.
///
/// # Safety
/// `reply` is NULL or a reply from this library, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ec_reply_free(reply: *mut EcReply) {
    if !reply.is_null() {
        // SAFETY: made by `Box::into_raw` in ec_cascade_infer, freed once.
        drop(unsafe { Box::from_raw(reply) });
    }
}
