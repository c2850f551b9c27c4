//! The HTTP server behind `edgecascade serve`.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/chat/completions` | OpenAI-compatible: `model` names a plugin, the last user message is its input, the reply's content is the plugin's answer as JSON |
//! | `POST /v1/plugins/{name}/infer` | native JSON: `{"text": …}` or `{"input": …, "content_type": …}`, optional `"mode"` |
//! | `GET /v1/models` | the loaded plugins, OpenAI-style |
//! | `GET /healthz` | liveness and the loaded plugins |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are JSON, OpenAI-style: `{"error": {"message", "type", "code"}}`. An input over
//! [`MAX_INPUT`] is refused with 413 `input_too_large`.
//!
//! A machine running the large plugins this way is the cloud tier of edge
//! hosts, and because the server routes too (`--cloud`), tiers chain:
//! device → gateway → cloud.

use crate::metrics::Metrics;
use crate::plugin::Input;
use crate::router::{Mode, Reply, Router};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// What the server serves: routers by plugin name, and the metrics they share.
#[derive(Clone)]
pub struct AppState {
    routers: Arc<RwLock<BTreeMap<String, Arc<Router>>>>,
    metrics: Metrics,
    next_id: Arc<AtomicU64>,
    recent: Arc<Mutex<BTreeMap<String, VecDeque<Input>>>>,
}

/// How many recent inputs per plugin [`AppState::recent`] keeps: what a
/// candidate from the fleet channel is run on in shadow before it is promoted.
pub const RECENT_INPUTS: usize = 64;

impl AppState {
    /// A server for these routers.
    pub fn new(routers: Vec<Router>, metrics: Metrics) -> AppState {
        for r in &routers {
            metrics.serving(r.plugin().name(), None, r.plugin().version());
        }
        let map = routers.into_iter().map(|r| (r.plugin().name().to_string(), Arc::new(r))).collect();
        AppState { routers: Arc::new(RwLock::new(map)), metrics, next_id: Arc::default(), recent: Arc::default() }
    }

    /// The last [`RECENT_INPUTS`] inputs routed to `plugin`, oldest first
    /// (held in memory only, never written anywhere).
    pub fn recent(&self, plugin: &str) -> Vec<Input> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.get(plugin).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    fn remember(&self, plugin: &str, input: &Input) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let queue = recent.entry(plugin.to_string()).or_default();
        if queue.len() == RECENT_INPUTS {
            queue.pop_front();
        }
        queue.push_back(input.clone());
    }

    /// The router for `name`.
    pub fn router(&self, name: &str) -> Option<Arc<Router>> {
        self.routers.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Puts `router` in place of the one with the same plugin name, atomically:
    /// requests already running finish on the old one.
    pub fn replace(&self, router: Router) {
        let name = router.plugin().name().to_string();
        let version = router.plugin().version().to_string();
        let old = self.routers.write().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), Arc::new(router));
        self.metrics.serving(&name, old.as_ref().map(|r| r.plugin().version()), &version);
    }

    /// The names of the loaded plugins.
    pub fn names(&self) -> Vec<String> {
        self.routers.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Shadow candidates (`serve --shadow`), by plugin name.
///
/// [`attach`](Shadows::attach) puts a plugin's candidate beside its router
/// ([`Router::with_shadow`]): answers still come from the live version, and
/// `/metrics` counts `shadow_compared` and `shadow_disagreements` by plugin
/// and candidate version. Call it for every router built, the ones a hot
/// reload builds included, so the candidate survives a reload of the live
/// plugin. Once the live plugin *is* the candidate's version (it was
/// promoted), the shadow is dropped: a version compared with itself counts
/// nothing.
#[derive(Clone, Default)]
pub struct Shadows {
    by_name: Arc<BTreeMap<String, crate::plugin::Plugin>>,
}

impl Shadows {
    /// These candidates; a later one of the same name replaces an earlier one.
    pub fn new(candidates: impl IntoIterator<Item = crate::plugin::Plugin>) -> Shadows {
        Shadows { by_name: Arc::new(candidates.into_iter().map(|p| (p.name().to_string(), p)).collect()) }
    }

    /// `router` with its plugin's candidate beside it, if there is one and it
    /// is another version than the one `router` serves.
    pub fn attach(&self, router: Router) -> Router {
        let plugin = router.plugin();
        match self.by_name.get(plugin.name()) {
            Some(candidate) if candidate.version() != plugin.version() => router.with_shadow(candidate.clone()),
            Some(candidate) => {
                tracing::info!(
                    "{} now serves {}, the shadow candidate's version: shadow dropped",
                    plugin.name(),
                    candidate.version()
                );
                router
            }
            None => router,
        }
    }
}

/// Builds a router for a freshly loaded plugin (the same settings as the
/// first). Its error is the embedder's own; a reload reports it as
/// `Error::Router`, with it as the source.
pub type MakeRouter = Arc<dyn Fn(crate::plugin::Plugin) -> Result<Router, BoxError> + Send + Sync>;

/// Any error of the embedder's, kept as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one reload attempt did.
#[derive(Debug)]
pub enum Reload {
    /// The new version serves from now on.
    Swapped {
        /// The plugin.
        plugin: String,
        /// The version it replaced.
        from: String,
        /// The version now serving.
        to: String,
    },
    /// The new version was refused; the old one keeps serving.
    Refused {
        /// The package directory.
        dir: PathBuf,
        /// Why: the load's error, or `Error::Router`.
        error: crate::error::Error,
    },
}

/// Hot reload: every `interval`, looks at each package's `plugin.toml`; when
/// it changed, verifies and loads the package in the background and swaps
/// it in atomically ([`AppState::replace`]). Requests already running finish
/// on the old version. A package that fails to verify or load is refused and
/// the old version keeps serving; `on_reload` hears about both.
///
/// Replace a package by writing its files first and `plugin.toml` last (as
/// `edgecascade pack` does), so a half-copied package is never seen whole.
pub fn watch(
    state: AppState,
    runtime: crate::engine::Runtime,
    dirs: Vec<PathBuf>,
    make_router: MakeRouter,
    interval: Duration,
    on_reload: impl Fn(Reload) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let stamp = |dir: &PathBuf| {
        std::fs::metadata(dir.join(crate::plugin::manifest::MANIFEST_FILE)).and_then(|m| m.modified()).ok()
    };
    let mut seen: Vec<Option<SystemTime>> = dirs.iter().map(stamp).collect();
    std::thread::Builder::new()
        .name("edgecascade-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                for (dir, last) in dirs.iter().zip(seen.iter_mut()) {
                    let now = stamp(dir);
                    if now == *last {
                        continue;
                    }
                    *last = now;
                    let loaded = runtime
                        .verify_complete(dir)
                        .and_then(|package| runtime.load_verified(package))
                        .and_then(|plugin| {
                            let name = plugin.name().to_string();
                            make_router(plugin).map_err(|source| crate::error::Error::Router { plugin: name, source })
                        });
                    match loaded {
                        Ok(router) => {
                            let name = router.plugin().name().to_string();
                            let to = router.plugin().version().to_string();
                            let from =
                                state.router(&name).map(|r| r.plugin().version().to_string()).unwrap_or_default();
                            state.replace(router);
                            on_reload(Reload::Swapped { plugin: name, from, to });
                        }
                        Err(error) => on_reload(Reload::Refused { dir: dir.clone(), error }),
                    }
                }
            }
        })
        .expect("spawning the watch thread")
}

/// The axum application.
pub fn app(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/plugins/{name}/infer", post(infer))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}

/// An OpenAI-style error body.
fn openai_error(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind, "code": code}});
    (status, Json(body)).into_response()
}

/// A JSON request body, read in full before it is judged. `Json` refuses a wrong content type
/// before reading, and closing on a client still sending a large body resets the connection:
/// the client sees a broken pipe instead of the error.
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, JsonRejection> {
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        let Json(value) = Json::from_request(Request::from_parts(parts, bytes.into()), state).await?;
        Ok(JsonBody(value))
    }
}

/// 400, or 413 past the body limit. A body not read in full also closes the connection, and
/// the answer says so: a keep-alive client would otherwise send its next request down a dead one.
fn invalid_body(e: JsonRejection) -> Response {
    let unread = matches!(e, JsonRejection::BytesRejection(_));
    let status = if unread { e.status() } else { StatusCode::BAD_REQUEST };
    let mut response = openai_error(status, "invalid_request_error", "invalid_body", e.body_text());
    if unread {
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

#[derive(Deserialize)]
struct ChatBody {
    model: String,
    messages: Vec<ChatMessageIn>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct ChatMessageIn {
    role: String,
    #[serde(default)]
    content: Value,
}

/// The text of a message: a string, or OpenAI's list of `{"type": "text", "text": …}` parts.
fn message_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!text.is_empty()).then(|| text.join("\n"))
        }
        _ => None,
    }
}

/// Approximate token counts: whitespace-separated words.
fn words(s: &str) -> u32 {
    s.split_whitespace().count() as u32
}

/// The largest input `serve` routes, in bytes. The plugins read a few thousand words at most;
/// a far larger input only runs the plugin past its deadline, and cannot be escalated either
/// (its prompt would exceed the plugin's output cap), so it would end in a 503 that no retry fixes.
pub const MAX_INPUT: usize = 256 << 10;

async fn route_blocking(state: &AppState, router: Arc<Router>, input: Input, mode: Mode) -> Result<Reply, Response> {
    if input.data().len() > MAX_INPUT {
        let message = format!("the input is {} bytes; at most {MAX_INPUT} are accepted", input.data().len());
        return Err(openai_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "input_too_large", message));
    }
    state.remember(router.plugin().name(), &input);
    tokio::task::spawn_blocking(move || router.route(&input, mode))
        .await
        .map_err(|e| openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", e.to_string()))
}

async fn chat_completions(State(state): State<AppState>, body: Result<JsonBody<ChatBody>, JsonRejection>) -> Response {
    let JsonBody(body) = match body {
        Ok(b) => b,
        Err(e) => return invalid_body(e),
    };
    if body.stream {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "stream_unsupported",
            "streaming is not supported",
        );
    }
    let Some(router) = state.router(&body.model) else {
        return openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("no plugin named {:?}; loaded: {:?}", body.model, state.names()),
        );
    };
    let Some(text) = body.messages.iter().rev().find(|m| m.role == "user").and_then(|m| message_text(&m.content))
    else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "no_user_message",
            "no user message with text content",
        );
    };
    let prompt_tokens: u32 = body.messages.iter().filter_map(|m| message_text(&m.content)).map(|t| words(&t)).sum();
    let reply = match route_blocking(&state, router, Input::text(text), Mode::Auto).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Some(answer) = &reply.answer else {
        // An input beyond the plugin will stay beyond it: 422, which clients do not retry.
        if let Some(why) = &reply.beyond {
            return openai_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", "beyond", why.clone());
        }
        let why = reply.local_error.clone().unwrap_or_else(|| "no tier could answer".into());
        return openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", "no_answer", why);
    };
    let content = serde_json::to_string(answer).unwrap_or_default();
    let completion_tokens = words(&content);
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Json(json!({
        "id": format!("chatcmpl-ec{id}"),
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
        "edgecascade": {"source": reply.source, "reason": reply.reason, "degraded": reply.degraded, "plugin_version": reply.version},
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    mode: Mode,
}

async fn infer(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<InferBody>, JsonRejection>,
) -> Response {
    let bad =
        |code: &str, message: String| openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", code, message);
    // The body first: one not read in full must close the connection, whatever else is wrong.
    let JsonBody(body) = match body {
        Ok(b) => b,
        Err(e) => return invalid_body(e),
    };
    // Taken as a `Result` so that a name that is not UTF-8 gets a JSON error like every other mistake.
    let Path(name) = match name {
        Ok(n) => n,
        Err(e) => return bad("invalid_path", e.body_text()),
    };
    let Some(router) = state.router(&name) else {
        return openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "plugin_not_found",
            format!("no plugin named {name:?}"),
        );
    };
    let input = match (body.text, body.input) {
        (Some(text), None) => Input::text(text),
        (None, Some(Value::String(s))) => {
            Input::new(body.content_type.unwrap_or_else(|| "text/plain".into()), s.into_bytes())
        }
        (None, Some(v)) => {
            Input::new(body.content_type.unwrap_or_else(|| "application/json".into()), v.to_string().into_bytes())
        }
        _ => return bad("invalid_body", "give exactly one of \"text\" or \"input\"".into()),
    };
    match route_blocking(&state, router, input, body.mode).await {
        Ok(reply) => Json(reply).into_response(),
        Err(response) => response,
    }
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .names()
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "edgecascade"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "plugins": state.names()}))
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}
