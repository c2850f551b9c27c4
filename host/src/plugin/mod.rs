//! Plugins: a package moves through typed stages —
//! [`Package`] (manifest read) → [`VerifiedPackage`] (hashes checked) →
//! [`Plugin`] (compiled, a warm instance loaded, ready to serve).

pub mod artifact;
pub mod manifest;
mod package;
mod report;
mod sign;

use crate::error::{Error, Result};
pub use crate::fsutil::sha256_hex;
use crate::sandbox::nn::NnRuntime;
use crate::sandbox::{Call, CallContext, HostState, Instance, LoadPayload};
use edgecascade_abi::{Answer, Outcome, Prompt, ResultFrame, content_type};
pub use manifest::Manifest;
#[cfg(feature = "fleet")]
pub(crate) use package::digest_of;
pub use package::{Package, VerifiedPackage, pack};
pub use report::{CacheOutcome, LoadReport};
#[cfg(feature = "compiler")]
pub(crate) use sign::signature;
pub use sign::{TrustPolicy, keygen, sign, signing_key};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wasmtime::InstancePre;

/// One input to a plugin: a content type and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    content_type: String,
    data: Vec<u8>,
}

impl Input {
    /// Text (`text/plain`).
    pub fn text(text: impl Into<String>) -> Input {
        Input { content_type: content_type::TEXT.into(), data: text.into().into_bytes() }
    }

    /// JSON (`application/json`).
    pub fn json(value: &serde_json::Value) -> Input {
        Input { content_type: content_type::JSON.into(), data: value.to_string().into_bytes() }
    }

    /// Any content type and payload.
    pub fn new(content_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Input {
        Input { content_type: content_type.into(), data: data.into() }
    }

    /// The content type.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The payload.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The payload as text, if it is UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// What the local model made of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Local {
    /// An answer, with the plugin's confidence.
    Answered(Answer),
    /// The plugin declined: the input is beyond it.
    Beyond {
        /// The plugin's reason.
        reason: String,
    },
}

/// Counters of a plugin's instance pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Instances created so far, including replacements after faults.
    pub created: u64,
    /// Instances dropped after a guest fault.
    pub discarded: u64,
    /// Instances alive now (idle or serving).
    pub live: usize,
    /// Instances idle now.
    pub idle: usize,
    /// Calls that gave up waiting for an instance ([`Error::Busy`]).
    pub busy: u64,
}

/// A loaded plugin, ready to serve. Cheap to clone; safe to share across threads.
///
/// Each call takes a warm instance from a small pool (at most
/// `limits.instances`; callers beyond that wait, until their deadline). After a guest fault — a
/// trap, the deadline, the memory cap, malformed output — that instance is
/// dropped and the next call gets a fresh one, so a fault never leaks into
/// the next request.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

struct Inner {
    manifest: Manifest,
    model_bytes: u64,
    pre: InstancePre<HostState>,
    /// The models to load into each new instance; `None` for a pre-initialized snapshot.
    load: Option<LoadPayload>,
    /// The shared runtime each instance is linked to, for a plugin that imports wasi-nn.
    runtime: Option<NnRuntime>,
    ctx: CallContext,
    report: LoadReport,
    pool: Mutex<Pool>,
    returned: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Instance>,
    stats: PoolStats,
}

impl Plugin {
    pub(crate) fn new(
        epoch_tick: Duration,
        package: VerifiedPackage,
        pre: InstancePre<HostState>,
        runtime: Option<InstancePre<HostState>>,
        mut report: LoadReport,
    ) -> Result<Plugin> {
        let manifest = package.manifest().clone();
        let ctx = CallContext { plugin: manifest.plugin.name.clone(), limits: manifest.limits.sandbox(), epoch_tick };
        let (load, runtime) = match runtime {
            // The models go to the runtime; the plugin's load frame names them.
            Some(pre) => {
                let (load, models) = package.runtime_payload();
                (Some(load), Some(NnRuntime { pre, models }))
            }
            None => ((!report.preinitialized).then(|| package.load_payload()), None),
        };
        let model_bytes = package.model_bytes();
        let started = Instant::now();
        let first = Instance::new(&pre, ctx.clone(), load.as_ref(), runtime.as_ref())?;
        report.instantiate_time = started.elapsed();
        let pool = Pool { idle: vec![first], stats: PoolStats { created: 1, live: 1, ..Default::default() } };
        Ok(Plugin {
            inner: Arc::new(Inner {
                manifest,
                model_bytes,
                pre,
                load,
                runtime,
                ctx,
                report,
                pool: Mutex::new(pool),
                returned: Condvar::new(),
            }),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.manifest.plugin.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.inner.manifest.plugin.version
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The size of the plugin's models in bytes (assets and the module not included).
    pub fn model_bytes(&self) -> u64 {
        self.inner.model_bytes
    }

    /// What loading did: cache hit or compile, and how long it took.
    pub fn load_report(&self) -> &LoadReport {
        &self.inner.report
    }

    /// Counters of the instance pool.
    pub fn pool_stats(&self) -> PoolStats {
        let pool = self.lock();
        PoolStats { idle: pool.idle.len(), ..pool.stats }
    }

    /// Runs the local model on `input`. Waits for a free instance at most one
    /// call deadline (`limits.deadline`), then fails with [`Error::Busy`].
    pub fn infer(&self, input: &Input) -> Result<Local> {
        self.infer_within(input, None)
    }

    /// [`Plugin::infer`] for a request that must be answered by `deadline`:
    /// waiting for an instance and the call itself both end by then (the call
    /// also by `limits.deadline`), with [`Error::Busy`] or [`Error::Deadline`].
    pub fn infer_by(&self, input: &Input, deadline: Instant) -> Result<Local> {
        self.infer_within(input, Some(deadline))
    }

    fn infer_within(&self, input: &Input, deadline: Option<Instant>) -> Result<Local> {
        let frame = self.call(Call::Infer, input, deadline)?;
        match self.decode::<Answer>(&frame)? {
            Outcome::Ok(answer) => Ok(Local::Answered(self.checked(answer)?)),
            Outcome::Beyond(b) => Ok(Local::Beyond { reason: b.reason }),
            Outcome::Error(e) => Err(Error::Guest { plugin: self.name().into(), kind: e.kind, message: e.message }),
        }
    }

    /// Asks the plugin how to phrase `input` for a large model.
    pub fn prompt(&self, input: &Input) -> Result<Prompt> {
        self.expect_ok(&self.call(Call::Prompt, input, None)?)
    }

    /// [`Plugin::prompt`], done by `deadline`.
    pub fn prompt_by(&self, input: &Input, deadline: Instant) -> Result<Prompt> {
        self.expect_ok(&self.call(Call::Prompt, input, Some(deadline))?)
    }

    /// Asks the plugin to read a large model's reply into an answer.
    pub fn parse_reply(&self, reply: &str) -> Result<Answer> {
        self.parse_reply_within(reply, None)
    }

    /// [`Plugin::parse_reply`], done by `deadline`.
    pub fn parse_reply_by(&self, reply: &str, deadline: Instant) -> Result<Answer> {
        self.parse_reply_within(reply, Some(deadline))
    }

    fn parse_reply_within(&self, reply: &str, deadline: Option<Instant>) -> Result<Answer> {
        let frame = self.with_instance(deadline, |i, budget| i.call(Call::ParseReply, &[reply.as_bytes()], budget))?;
        let answer = self.expect_ok(&frame)?;
        self.checked(answer)
    }

    fn call(&self, call: Call, input: &Input, deadline: Option<Instant>) -> Result<ResultFrame<'static>> {
        let parts: [&[u8]; 3] = [input.content_type.as_bytes(), b"\n", &input.data];
        self.with_instance(deadline, |i, budget| i.call(call, &parts, budget))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, frame: &ResultFrame<'_>) -> Result<Outcome<T>> {
        frame.decode::<T>().map_err(|e| Error::MalformedOutput { plugin: self.name().into(), detail: e.to_string() })
    }

    fn expect_ok<T: serde::de::DeserializeOwned>(&self, frame: &ResultFrame<'_>) -> Result<T> {
        match self.decode::<T>(frame)? {
            Outcome::Ok(v) => Ok(v),
            Outcome::Error(e) => Err(Error::Guest { plugin: self.name().into(), kind: e.kind, message: e.message }),
            Outcome::Beyond(b) => Err(Error::MalformedOutput {
                plugin: self.name().into(),
                detail: format!("'beyond' is only valid from infer: {}", b.reason),
            }),
        }
    }

    /// Rejects answers whose numbers make no sense, before anyone routes on them.
    fn checked(&self, answer: Answer) -> Result<Answer> {
        let bad = |detail: String| Error::MalformedOutput { plugin: self.name().into(), detail };
        if !(0.0..=1.0).contains(&answer.confidence) {
            return Err(bad(format!("confidence {} is outside [0, 1]", answer.confidence)));
        }
        if answer.scores.iter().any(|s| !s.score.is_finite()) {
            return Err(bad("a score is not finite".into()));
        }
        Ok(answer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the pool inconsistent.
        self.inner.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a warm instance, with the time the call may take, and drops
    /// the instance if the guest faulted. With a request `deadline`, waiting
    /// and the call end by it (the call also by `limits.deadline`); without
    /// one, the wait ends after one `limits.deadline` and the call gets a whole one.
    fn with_instance<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut Instance, Duration) -> Result<R>,
    ) -> Result<R> {
        let started = Instant::now();
        let call_deadline = self.inner.manifest.limits.deadline;
        let mut instance = self.checkout(deadline.unwrap_or(started + call_deadline), started)?;
        let budget = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(call_deadline),
            None => call_deadline,
        };
        let result = if budget.is_zero() { Err(self.busy(started)) } else { f(&mut instance, budget) };
        let mut pool = self.lock();
        match &result {
            Err(e) if e.is_guest_fault() => {
                pool.stats.live -= 1;
                pool.stats.discarded += 1;
                tracing::warn!(plugin = %self.name(), "dropped a faulted instance: {e}");
            }
            _ => pool.idle.push(instance),
        }
        drop(pool);
        self.inner.returned.notify_one();
        result
    }

    fn busy(&self, since: Instant) -> Error {
        Error::Busy {
            plugin: self.name().into(),
            instances: self.inner.manifest.limits.instances,
            waited: since.elapsed(),
        }
    }

    /// A warm instance, a new one while fewer than `limits.instances` live, or
    /// the first one handed back before `deadline`.
    fn checkout(&self, deadline: Instant, started: Instant) -> Result<Instance> {
        let max = self.inner.manifest.limits.instances;
        let mut pool = self.lock();
        loop {
            if let Some(instance) = pool.idle.pop() {
                return Ok(instance);
            }
            if pool.stats.live < max {
                pool.stats.live += 1;
                pool.stats.created += 1;
                drop(pool);
                let fresh = Instance::new(
                    &self.inner.pre,
                    self.inner.ctx.clone(),
                    self.inner.load.as_ref(),
                    self.inner.runtime.as_ref(),
                );
                if fresh.is_err() {
                    self.lock().stats.live -= 1;
                    self.inner.returned.notify_one();
                }
                return fresh;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                pool.stats.busy += 1;
                return Err(self.busy(started));
            }
            pool = self.inner.returned.wait_timeout(pool, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Creates one fresh instance outside the pool — instantiate, `_initialize`,
    /// ABI check and model load, exactly what the pool pays for a cold instance —
    /// and hands it back opaque, so the caller decides when it is dropped.
    /// For the benchmarks in `host/benches`; not part of the API.
    #[doc(hidden)]
    pub fn fresh_instance_for_bench(&self) -> Result<impl Sized + use<>> {
        Instance::new(&self.inner.pre, self.inner.ctx.clone(), self.inner.load.as_ref(), self.inner.runtime.as_ref())
    }

    /// The linear memory, in bytes, of each idle instance: the plugin's own,
    /// plus its shared runtime instance's for a plugin that imports wasi-nn.
    pub fn instance_memory(&self) -> Vec<usize> {
        self.lock().idle.iter().map(|i| i.memory_bytes()).map(|(own, runtime)| own + runtime).collect()
    }

    /// The linear memory, in bytes, of each idle instance's shared runtime
    /// instance (all 0 for a plugin without wasi-nn).
    pub fn runtime_memory(&self) -> Vec<usize> {
        self.lock().idle.iter().map(|i| i.memory_bytes().1).collect()
    }
}
