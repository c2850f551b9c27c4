//! The wire types of the edgecascade guest ABI, version 1.
//!
//! This crate is the contract between the host (`edgecascade`) and a plugin
//! built with the guest SDK (`edgecascade-guest`). `guest/ABI.md` describes
//! the same contract for authors in other languages; keep the two in step.
//!
//! Every call into a plugin passes one byte buffer in and gets one *result
//! frame* back: a status byte followed by a UTF-8 JSON body.
//!
//! ```
//! use edgecascade_abi::{Answer, ResultFrame, Status};
//!
//! let answer = Answer::from_probs(&["no".into(), "yes".into()], &[0.2, 0.8]);
//! let frame = ResultFrame::ok(&answer).to_bytes();
//! assert_eq!(frame[0], Status::Ok as u8);
//! let decoded: Answer = ResultFrame::parse(&frame).unwrap().into_ok().unwrap();
//! assert_eq!(decoded.label.as_deref(), Some("yes"));
//! ```

use serde::{Deserialize, Serialize};

#[cfg(feature = "schema")]
pub mod schema;
mod tensor;
pub use tensor::{NpyError, Tensor, TensorData};

/// The ABI's major version. A plugin exports it from
/// [`exports::ABI_VERSION`]; the host refuses any other value, because a new
/// major version changes a signature, the framing or a field's meaning.
pub const ABI_VERSION: u32 = 1;

/// The ABI's minor version: what this crate adds within major version 1.
/// Minors are additive, and every side reads tolerantly, so any minor works
/// with any other of the same major:
///
/// - a reader ignores JSON fields it does not know, and an [`ErrorKind`] it
///   does not know reads as [`ErrorKind::Other`];
/// - a writer adds only optional fields, which an older reader may drop.
///
/// Minor 0 (the first release) read strictly: its guests refuse an unknown
/// field in a [`LoadRequest`], and its hosts refuse one in an [`Answer`]. So
/// each side says its minor (a plugin through the optional
/// [`exports::ABI_MINOR`], a host through [`LoadRequest::abi_minor`]), a host
/// sends a minor-0 guest only the fields of minor 0
/// ([`LoadRequest::for_guest_minor`]), and a guest sends a host that did not
/// say its minor only the fields of minor 0.
///
/// | minor | adds |
/// |---|---|
/// | 0 | the first release |
/// | 1 | tolerant readers, [`ErrorKind::Other`], [`exports::ABI_MINOR`], [`LoadRequest::abi_minor`] |
/// | 2 | [`FileEntry::runtime`]: models held by the host's shared wasi-nn runtime |
pub const ABI_MINOR: u32 = 2;

/// Names of the functions a plugin exports (and the one it may import).
pub mod exports {
    /// `() -> ()`: the reactor's initializer; the host calls it once, first.
    pub const INITIALIZE: &str = "_initialize";
    /// `() -> i32`: returns the ABI version the plugin implements.
    pub const ABI_VERSION: &str = "edgecascade_abi_version";
    /// `() -> i32`, optional: returns the ABI minor the plugin implements
    /// ([`ABI_MINOR`](crate::ABI_MINOR)); a plugin without it is minor 0.
    pub const ABI_MINOR: &str = "edgecascade_abi_minor";
    /// `(len: i32) -> i32`: allocates `len` bytes for the host to fill; 0 on failure.
    pub const ALLOC: &str = "edgecascade_alloc";
    /// `(ptr: i32, len: i32) -> i64`: a [`LoadRequest`](crate::LoadRequest) frame in, a result frame out.
    pub const LOAD: &str = "edgecascade_load";
    /// `(ptr: i32, len: i32) -> i64`: an input frame in, an [`Answer`](crate::Answer) out.
    pub const INFER: &str = "edgecascade_infer";
    /// `(ptr: i32, len: i32) -> i64`: an input frame in, a [`Prompt`](crate::Prompt) out.
    pub const PROMPT: &str = "edgecascade_prompt";
    /// `(ptr: i32, len: i32) -> i64`: the large model's reply (UTF-8) in, an [`Answer`](crate::Answer) out.
    pub const PARSE_REPLY: &str = "edgecascade_parse_reply";
    /// The linear memory every pointer refers to.
    pub const MEMORY: &str = "memory";

    /// Import module of the host functions a plugin may use.
    pub const HOST_MODULE: &str = "edgecascade";
    /// `(ptr: i32, len: i32) -> ()`: records a panic message just before the guest aborts.
    pub const HOST_PANIC: &str = "panic_message";
}

/// The first byte of every result frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The body is the call's value (an [`Answer`], a [`Prompt`], or [`Loaded`]).
    Ok = 0,
    /// The body is a [`Beyond`]: the input is outside what the plugin can judge.
    Beyond = 1,
    /// The body is a [`GuestError`].
    Error = 2,
}

impl Status {
    /// Decodes a status byte.
    pub fn from_byte(byte: u8) -> Option<Status> {
        match byte {
            0 => Some(Status::Ok),
            1 => Some(Status::Beyond),
            2 => Some(Status::Error),
            _ => None,
        }
    }
}

/// The shared inference runtime's contract: what the host calls in the
/// runtime module it links to every plugin that imports wasi-nn (see
/// `guest/ABI.md`, "The shared runtime"). Private between the host and the
/// runtime that ships with it; plugins see only wasi-nn.
pub mod nn_runtime {
    /// The runtime contract's version, from the `ecnn_version` export; a host
    /// links only a runtime of its own version.
    pub const RUNTIME_VERSION: u32 = 1;
    /// `() -> i32`: [`RUNTIME_VERSION`].
    pub const VERSION: &str = "ecnn_version";
    /// `(len: i32) -> i32`: a buffer for the host to fill, passed to exactly one call.
    pub const ALLOC: &str = "ecnn_alloc";
    /// `(ptr: i32, len: i32) -> i64`: ONNX bytes in; a graph id out.
    pub const LOAD: &str = "ecnn_load";
    /// `(graph: i32) -> i64`: a new execution context's id.
    pub const INIT: &str = "ecnn_init";
    /// `(context, index, tensor_type, ptr, len: i32) -> i64`: the buffer holds the
    /// rank (u32), the dimensions (u32 each), then the values; all little-endian.
    pub const SET_INPUT: &str = "ecnn_set_input";
    /// `(context: i32) -> i64`: runs the model.
    pub const COMPUTE: &str = "ecnn_compute";
    /// `(context, index: i32) -> i64`: the output's length in bytes; the bytes
    /// are at `ecnn_output_ptr()` until the next call.
    pub const OUTPUT: &str = "ecnn_output";
    /// `() -> i32`: where the last output's bytes are.
    pub const OUTPUT_PTR: &str = "ecnn_output_ptr";
    /// `() -> i64`: the last failure's message, packed like a result frame.
    pub const LAST_ERROR: &str = "ecnn_last_error";

    /// wasi-nn's error codes (`nn_errno`, witx numbering). A runtime call
    /// returns minus one of these on failure.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u16)]
    pub enum Errno {
        Success = 0,
        InvalidArgument = 1,
        InvalidEncoding = 2,
        MissingMemory = 3,
        Busy = 4,
        RuntimeError = 5,
        UnsupportedOperation = 6,
        TooLarge = 7,
        NotFound = 8,
    }

    impl Errno {
        /// The code for a runtime call's negative result; an unknown one is a runtime error.
        pub fn from_result(result: i64) -> Errno {
            u32::try_from(-result).ok().and_then(Errno::from_code).unwrap_or(Errno::RuntimeError)
        }

        /// The error with this wasi-nn code, if it is one.
        pub fn from_code(code: u32) -> Option<Errno> {
            const ALL: [Errno; 9] = [
                Errno::Success,
                Errno::InvalidArgument,
                Errno::InvalidEncoding,
                Errno::MissingMemory,
                Errno::Busy,
                Errno::RuntimeError,
                Errno::UnsupportedOperation,
                Errno::TooLarge,
                Errno::NotFound,
            ];
            ALL.get(code as usize).copied()
        }

        /// wasi-nn's name for it (`runtime_error`).
        pub fn name(self) -> &'static str {
            match self {
                Errno::Success => "success",
                Errno::InvalidArgument => "invalid_argument",
                Errno::InvalidEncoding => "invalid_encoding",
                Errno::MissingMemory => "missing_memory",
                Errno::Busy => "busy",
                Errno::RuntimeError => "runtime_error",
                Errno::UnsupportedOperation => "unsupported_operation",
                Errno::TooLarge => "too_large",
                Errno::NotFound => "not_found",
            }
        }
    }
}

/// Packs a guest pointer and length into the `i64` every call returns:
/// pointer in the high 32 bits, length in the low 32 bits.
pub fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a packed `i64` into `(ptr, len)`.
pub fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// One answer, local or from a large model: the same shape either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Answer {
    /// The predicted label, for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Per-label scores, highest first. May be empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<Score>,
    /// How sure the plugin is that this answer is right, in `[0, 1]`.
    pub confidence: f32,
    /// Output tensors, for plugins that return values rather than labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<Tensor>,
}

impl Answer {
    /// Builds a classifier answer from probabilities aligned with `labels`:
    /// the label is the arg-max, the confidence its probability, and the
    /// scores are sorted highest first.
    pub fn from_probs(labels: &[String], probs: &[f32]) -> Answer {
        let mut scores: Vec<Score> =
            labels.iter().zip(probs).map(|(label, &score)| Score { label: label.clone(), score }).collect();
        scores.sort_by(|a, b| b.score.total_cmp(&a.score));
        let (label, confidence) = match scores.first() {
            Some(top) => (Some(top.label.clone()), top.score.clamp(0.0, 1.0)),
            None => (None, 0.0),
        };
        Answer { label, scores, confidence, tensors: Vec::new() }
    }
}

/// A label and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Score {
    /// The label.
    pub label: String,
    /// Its probability or score.
    pub score: f32,
}

/// How a plugin phrases its task for a large model: OpenAI-style chat messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Prompt {
    /// The conversation to send, in order.
    pub messages: Vec<ChatMessage>,
    /// An upper bound on the reply's length, in tokens; the host's default applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

/// The speaker of a [`ChatMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The task and its input.
    User,
    /// An earlier model turn (for few-shot examples).
    Assistant,
}

/// The body of a [`Status::Beyond`] frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Beyond {
    /// Why the input is beyond the plugin, for logs and metrics.
    pub reason: String,
}

/// The body of a [`Status::Error`] frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GuestError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// A human-readable message.
    pub message: String,
}

/// Classes of guest-reported failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input is malformed (wrong content type, bad JSON, wrong tensor shape).
    BadInput,
    /// A model file could not be loaded or run (for example an unsupported op).
    Model,
    /// The large model's reply could not be understood.
    BadReply,
    /// The plugin was called before a successful load.
    NotLoaded,
    /// Anything else.
    Internal,
    /// A kind this side does not know, sent by a peer of a newer ABI minor.
    /// It is read, never written by this crate, and treated like [`ErrorKind::Internal`].
    #[serde(other)]
    Other,
}

/// The body of a successful load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Loaded {
    /// Free-form facts the plugin reports about itself (models, inputs).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub info: serde_json::Map<String, serde_json::Value>,
}

/// The header of a load frame: `[u32 LE header length][header JSON][file bytes...]`.
/// File bytes follow the header back to back, in the order of [`LoadRequest::files`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoadRequest {
    /// The ABI version of the host.
    pub abi_version: u32,
    /// The plugin's name from its manifest.
    pub name: String,
    /// The plugin's version from its manifest.
    pub version: String,
    /// The labels from the manifest, in model output order.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The manifest's free-form `[config]` table.
    #[serde(default)]
    pub config: serde_json::Value,
    /// The files that follow the header.
    pub files: Vec<FileEntry>,
    /// The host's ABI minor ([`ABI_MINOR`]); absent from a minor-0 host, and
    /// never sent to a minor-0 guest, which would refuse it. Added in minor 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi_minor: Option<u32>,
}

impl LoadRequest {
    /// This request as a guest of ABI minor `guest_minor` may read it: a
    /// minor-0 guest refuses unknown fields, so it gets only minor 0's; any
    /// later guest reads tolerantly and gets everything, with this host's
    /// minor in [`LoadRequest::abi_minor`].
    pub fn for_guest_minor(mut self, guest_minor: u32) -> LoadRequest {
        self.abi_minor = (guest_minor > 0).then_some(ABI_MINOR);
        self
    }

    /// The minor of the host that sent this request (0 when it did not say).
    pub fn host_minor(&self) -> u32 {
        self.abi_minor.unwrap_or(0)
    }
}

/// One file handed to the plugin at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileEntry {
    /// The name the plugin asks for it by.
    pub name: String,
    /// Whether it is an ONNX model or another asset.
    pub kind: FileKind,
    /// Its length in bytes: how many bytes of the frame are this file's (0 when
    /// [`runtime`](FileEntry::runtime) is set).
    pub len: u64,
    /// The model's bytes are not in the frame: the host has them loaded by
    /// its shared inference runtime, and the plugin reaches the model through
    /// wasi-nn's `load_by_name` under [`name`](FileEntry::name). Sent only to a
    /// plugin that imports wasi-nn. Default `false`; added in minor 2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime: bool,
}

/// What a loaded file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// An ONNX model.
    Model,
    /// Anything else (a vocabulary, a table).
    Asset,
}

/// Errors decoding a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is empty.
    Empty,
    /// The status byte is not 0, 1 or 2.
    BadStatus(u8),
    /// The body is not valid UTF-8 JSON of the expected type.
    BadBody(String),
    /// The frame is shorter than its own header says.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Empty => write!(f, "empty result frame"),
            FrameError::BadStatus(b) => write!(f, "unknown status byte {b}"),
            FrameError::BadBody(e) => write!(f, "bad frame body: {e}"),
            FrameError::Truncated => write!(f, "frame shorter than its header says"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A decoded result frame: a status and its raw JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultFrame<'a> {
    /// The status byte.
    pub status: Status,
    /// The JSON body, not yet decoded.
    pub body: std::borrow::Cow<'a, [u8]>,
}

/// A result frame decoded by status.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// The call's value.
    Ok(T),
    /// The plugin declines the input.
    Beyond(Beyond),
    /// The plugin reports an error.
    Error(GuestError),
}

impl<'a> ResultFrame<'a> {
    /// Encodes a successful value.
    pub fn ok<T: Serialize>(value: &T) -> ResultFrame<'static> {
        Self::encode(Status::Ok, value)
    }

    /// Encodes a [`Beyond`].
    pub fn beyond(reason: impl Into<String>) -> ResultFrame<'static> {
        Self::encode(Status::Beyond, &Beyond { reason: reason.into() })
    }

    /// Encodes a [`GuestError`].
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> ResultFrame<'static> {
        Self::encode(Status::Error, &GuestError { kind, message: message.into() })
    }

    fn encode<T: Serialize>(status: Status, value: &T) -> ResultFrame<'static> {
        // Serializing our own plain data types cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        ResultFrame { status, body: body.into() }
    }

    /// The frame's bytes: status byte, then body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.body.len());
        out.push(self.status as u8);
        out.extend_from_slice(&self.body);
        out
    }

    /// Splits raw frame bytes into status and body, without decoding the body.
    pub fn parse(bytes: &'a [u8]) -> Result<ResultFrame<'a>, FrameError> {
        let (&first, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        let status = Status::from_byte(first).ok_or(FrameError::BadStatus(first))?;
        Ok(ResultFrame { status, body: body.into() })
    }

    /// Decodes the body according to the status.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<Outcome<T>, FrameError> {
        fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, FrameError> {
            serde_json::from_slice(b).map_err(|e| FrameError::BadBody(e.to_string()))
        }
        Ok(match self.status {
            Status::Ok => Outcome::Ok(body(&self.body)?),
            Status::Beyond => Outcome::Beyond(body(&self.body)?),
            Status::Error => Outcome::Error(body(&self.body)?),
        })
    }

    /// Decodes an `Ok` body, turning any other status into an error string.
    pub fn into_ok<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        match self.decode::<T>().map_err(|e| e.to_string())? {
            Outcome::Ok(v) => Ok(v),
            Outcome::Beyond(b) => Err(format!("beyond: {}", b.reason)),
            Outcome::Error(e) => Err(format!("{:?}: {}", e.kind, e.message)),
        }
    }
}

/// The first line of an input frame names the content type; the payload follows.
///
/// `text/plain\nThe central bank raised rates` is a text input.
pub fn encode_input(content_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content_type.len() + 1 + payload.len());
    out.extend_from_slice(content_type.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Splits an input frame into `(content_type, payload)`. A frame with no
/// newline is all payload, with an empty content type.
pub fn decode_input(frame: &[u8]) -> (&str, &[u8]) {
    match frame.iter().position(|&b| b == b'\n') {
        Some(i) => match std::str::from_utf8(&frame[..i]) {
            Ok(ct) => (ct.trim(), &frame[i + 1..]),
            Err(_) => ("", frame),
        },
        None => ("", frame),
    }
}

/// Well-known content types.
pub mod content_type {
    /// UTF-8 text.
    pub const TEXT: &str = "text/plain";
    /// JSON; for tensor plugins, `{"inputs": [Tensor, ...]}`.
    pub const JSON: &str = "application/json";
    /// A NumPy `.npy` file holding one tensor.
    pub const NPY: &str = "application/x-npy";
}

/// Builds a load frame from a header and the files' bytes, in the header's order.
pub fn encode_load(request: &LoadRequest, files: &[&[u8]]) -> Vec<u8> {
    let mut out = encode_load_header(request);
    out.reserve(files.iter().map(|f| f.len()).sum());
    for f in files {
        out.extend_from_slice(f);
    }
    out
}

/// The front of a load frame, `[u32 LE header length][header JSON]`: a host
/// writes it and then the files' bytes, without copying them into one buffer.
pub fn encode_load_header(request: &LoadRequest) -> Vec<u8> {
    let header = serde_json::to_vec(request).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + header.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

/// Splits a load frame into its header and the files' byte ranges.
pub fn decode_load(frame: &[u8]) -> Result<(LoadRequest, Vec<&[u8]>), FrameError> {
    let len_bytes: [u8; 4] = frame.get(..4).ok_or(FrameError::Truncated)?.try_into().unwrap();
    let header_len = u32::from_le_bytes(len_bytes) as usize;
    let header = frame.get(4..4 + header_len).ok_or(FrameError::Truncated)?;
    let request: LoadRequest = serde_json::from_slice(header).map_err(|e| FrameError::BadBody(e.to_string()))?;
    let mut rest = &frame[4 + header_len..];
    let mut files = Vec::with_capacity(request.files.len());
    for entry in &request.files {
        let len = usize::try_from(entry.len).map_err(|_| FrameError::Truncated)?;
        if rest.len() < len {
            return Err(FrameError::Truncated);
        }
        let (file, tail) = rest.split_at(len);
        files.push(file);
        rest = tail;
    }
    Ok((request, files))
}

#[cfg(test)]
mod compat;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_high_addresses() {
        for (p, l) in [(0, 0), (1, 2), (u32::MAX, u32::MAX), (0x8000_0000, 7)] {
            assert_eq!(unpack(pack(p, l)), (p, l));
        }
    }

    #[test]
    fn load_frame_round_trips() {
        let req = LoadRequest {
            abi_version: ABI_VERSION,
            name: "p".into(),
            version: "1".into(),
            labels: vec!["a".into()],
            config: serde_json::json!({"k": 1}),
            files: vec![
                FileEntry { name: "m".into(), kind: FileKind::Model, len: 3, runtime: false },
                FileEntry { name: "v".into(), kind: FileKind::Asset, len: 2, runtime: true },
            ],
            abi_minor: Some(ABI_MINOR),
        };
        let frame = encode_load(&req, &[b"abc", b"de"]);
        let (back, files) = decode_load(&frame).unwrap();
        assert_eq!(back, req);
        assert_eq!(files, vec![&b"abc"[..], &b"de"[..]]);
        assert_eq!(decode_load(&frame[..frame.len() - 1]), Err(FrameError::Truncated));
    }

    #[test]
    fn frames_reject_garbage() {
        assert_eq!(ResultFrame::parse(&[]), Err(FrameError::Empty));
        assert_eq!(ResultFrame::parse(&[9, b'{']).unwrap_err(), FrameError::BadStatus(9));
        let f = ResultFrame::parse(&[0, b'x']).unwrap();
        assert!(matches!(f.decode::<Answer>(), Err(FrameError::BadBody(_))));
    }

    #[test]
    fn input_frame_splits_on_first_newline() {
        let frame = encode_input("text/plain", b"a\nb");
        assert_eq!(decode_input(&frame), ("text/plain", &b"a\nb"[..]));
    }
}
