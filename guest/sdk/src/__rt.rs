//! The glue behind [`export_plugin!`](crate::export_plugin): buffers, frames and the panic hook.
//! Not a public API; the ABI it implements is documented in `guest/ABI.md`.

use crate::{Error, Input, LoadContext, Plugin};
use edgecascade_abi::{ErrorKind, Loaded, ResultFrame, Status, decode_input, decode_load, pack};
use serde::Serialize;

/// The per-module state: the loaded plugin and the reusable output buffer.
pub struct State<P> {
    plugin: Option<P>,
    out: Vec<u8>,
}

impl<P: Plugin> State<P> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        State { plugin: None, out: Vec::new() }
    }

    pub fn load(&mut self, ptr: i32, len: i32) -> i64 {
        let mut buffer = take(ptr, len);
        // Drop any earlier plugin first so a reload does not hold two models at once.
        self.plugin = None;
        let result = match decode_load(&buffer) {
            Err(e) => Err(Error::bad_input(format!("load frame: {e}"))),
            Ok((request, files)) => P::load(&LoadContext::new(request, files)),
        };
        // The model files are parsed now. Zero them before freeing: a
        // pre-initialization snapshot stores every non-zero page, and stale
        // model bytes would double its size.
        buffer.fill(0);
        match result {
            Ok(plugin) => {
                self.plugin = Some(plugin);
                self.ok(&Loaded::default())
            }
            Err(e) => self.error(&e),
        }
    }

    pub fn infer(&mut self, ptr: i32, len: i32) -> i64 {
        let buffer = take(ptr, len);
        let (content_type, data) = decode_input(&buffer);
        let input = Input::new(content_type, data);
        let Some(plugin) = self.plugin.as_mut() else { return self.not_loaded() };
        if let Some(reason) = plugin.beyond(&input) {
            return self.frame(Status::Beyond, &edgecascade_abi::Beyond { reason });
        }
        match plugin.infer(&input) {
            Ok(answer) => self.ok(&answer),
            Err(e) => self.error(&e),
        }
    }

    pub fn prompt(&mut self, ptr: i32, len: i32) -> i64 {
        let buffer = take(ptr, len);
        let (content_type, data) = decode_input(&buffer);
        let Some(plugin) = self.plugin.as_ref() else { return self.not_loaded() };
        match plugin.prompt(&Input::new(content_type, data)) {
            Ok(prompt) => self.ok(&prompt),
            Err(e) => self.error(&e),
        }
    }

    pub fn parse_reply(&mut self, ptr: i32, len: i32) -> i64 {
        let buffer = take(ptr, len);
        let Some(plugin) = self.plugin.as_ref() else { return self.not_loaded() };
        let result = match std::str::from_utf8(&buffer) {
            Ok(reply) => plugin.parse_reply(reply),
            Err(e) => Err(Error::bad_reply(format!("reply is not UTF-8: {e}"))),
        };
        match result {
            Ok(answer) => self.ok(&answer),
            Err(e) => self.error(&e),
        }
    }

    fn not_loaded(&mut self) -> i64 {
        self.error(&Error { kind: ErrorKind::NotLoaded, message: "call load first".into() })
    }

    fn ok<T: Serialize>(&mut self, value: &T) -> i64 {
        self.frame(Status::Ok, value)
    }

    fn error(&mut self, e: &Error) -> i64 {
        let body = edgecascade_abi::GuestError { kind: e.kind, message: e.message.clone() };
        self.frame(Status::Error, &body)
    }

    /// Writes a result frame into the reused output buffer; it stays valid until the next call.
    fn frame<T: Serialize>(&mut self, status: Status, value: &T) -> i64 {
        self.out.clear();
        self.out.push(status as u8);
        if serde_json::to_writer(&mut self.out, value).is_err() {
            self.out.clear();
            let f = ResultFrame::error(ErrorKind::Internal, "could not encode the result");
            self.out.extend_from_slice(&f.to_bytes());
        }
        pack(self.out.as_ptr() as u32, self.out.len() as u32)
    }
}

/// Allocates `len` bytes for the host to fill. The host passes the same
/// pointer and length to exactly one call, which takes ownership.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else { return 0 };
    let mut buffer = Vec::<u8>::new();
    if buffer.try_reserve_exact(len).is_err() {
        return 0;
    }
    buffer.resize(len, 0);
    Box::into_raw(buffer.into_boxed_slice()) as *mut u8 as usize as i32
}

/// Takes back a buffer made by [`alloc`].
fn take(ptr: i32, len: i32) -> Box<[u8]> {
    let len = usize::try_from(len).unwrap_or(0);
    if ptr == 0 || len == 0 {
        return Box::default();
    }
    // SAFETY: the ABI says the host passes back exactly the pointer and length
    // that `alloc` returned, once.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len)) }
}

#[cfg(target_family = "wasm")]
mod host {
    #[link(wasm_import_module = "edgecascade")]
    unsafe extern "C" {
        #[link_name = "panic_message"]
        pub fn panic_message(ptr: *const u8, len: usize);
    }

    unsafe extern "C" {
        /// Defined by wasm-ld. Calling it from `_initialize` also tells wasm-ld
        /// this is a reactor, so it does not re-run constructors around every export.
        pub fn __wasm_call_ctors();
    }
}

/// Runs the module's constructors once and installs the panic hook.
pub fn initialize() {
    #[cfg(target_family = "wasm")]
    // SAFETY: called once by the host before any other export, as the ABI requires.
    unsafe {
        host::__wasm_call_ctors()
    };
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        #[cfg(target_family = "wasm")]
        // SAFETY: the host reads `len` bytes at `ptr` before this hook returns.
        unsafe {
            host::panic_message(message.as_ptr(), message.len())
        };
        #[cfg(not(target_family = "wasm"))]
        eprintln!("{message}");
    }));
}
