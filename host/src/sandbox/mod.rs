//! One sandboxed instance of a plugin and the checked calls into it.
//!
//! An [`Instance`] owns a wasmtime `Store`: the guest's memory, its
//! deny-by-default WASI ([`wasi`]: clocks and randomness; no files, network,
//! env or args; stderr captured with a cap), a limiter that caps memory, and an epoch deadline per call. Every
//! pointer and length the guest returns is bounds-checked before it is read.

pub(crate) mod nn;
mod stderr;
mod wasi;

use crate::error::{Error, Result};
use edgecascade_abi::{ResultFrame, exports, unpack};
use std::time::Duration;
use wasmtime::{Caller, Engine, InstancePre, Linker, Memory, Module, Store, Trap, TypedFunc};

use stderr::StderrCapture;
use wasi::GuestExit;

/// The longest panic message kept from a guest.
const MAX_PANIC_MESSAGE: usize = 4096;

/// What the host keeps per store.
pub(crate) struct HostState {
    limiter: MemoryLimiter,
    panic_message: Option<String>,
    stderr: StderrCapture,
    /// The shared runtime's instance, for a plugin that imports wasi-nn.
    nn: Option<nn::NnLink>,
}

/// Caps linear memory and remembers that the cap was hit, so the trap that
/// follows is reported as [`Error::MemoryCap`] rather than a bare trap.
struct MemoryLimiter {
    cap: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            // An error (rather than `Ok(false)`) traps at once instead of
            // letting the guest's allocator abort somewhere less clear.
            wasmtime::bail!("memory cap of {} bytes reached", self.cap);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    // A plugin, and for one that imports wasi-nn the shared runtime's instance;
    // each memory is capped on its own.
    fn instances(&self) -> usize {
        2
    }

    fn memories(&self) -> usize {
        2
    }

    fn tables(&self) -> usize {
        4
    }
}

/// Builds the linker every plugin shares: WASI preview 1 and the ABI's host functions.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasi::add_to_linker(engine, &mut linker).map_err(|e| Error::Engine(format!("adding WASI to the linker: {e}")))?;
    linker
        .func_wrap(
            exports::HOST_MODULE,
            exports::HOST_PANIC,
            |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
                let len = (len as u32 as usize).min(MAX_PANIC_MESSAGE);
                let message = caller
                    .get_export(exports::MEMORY)
                    .and_then(|e| e.into_memory())
                    .and_then(|m| m.data(&caller).get(ptr as u32 as usize..).map(|d| d[..len.min(d.len())].to_vec()))
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .unwrap_or_else(|| "<panic message out of bounds>".into());
                caller.data_mut().panic_message = Some(message);
            },
        )
        .map_err(|e| Error::Engine(format!("adding host functions: {e}")))?;
    nn::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Checks that a compiled module exports everything ABI v1 requires, with the right types.
/// A pre-initialized snapshot has already run `_initialize`, and no longer exports it.
pub(crate) fn check_exports(plugin: &str, module: &Module, preinitialized: bool) -> Result<()> {
    use wasmtime::{ExternType, ValType};
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum T {
        I32,
        I64,
    }
    let required: [(&str, &[T], &[T]); 7] = [
        (exports::INITIALIZE, &[], &[]),
        (exports::ABI_VERSION, &[], &[T::I32]),
        (exports::ALLOC, &[T::I32], &[T::I32]),
        (exports::LOAD, &[T::I32, T::I32], &[T::I64]),
        (exports::INFER, &[T::I32, T::I32], &[T::I64]),
        (exports::PROMPT, &[T::I32, T::I32], &[T::I64]),
        (exports::PARSE_REPLY, &[T::I32, T::I32], &[T::I64]),
    ];
    let missing = |export: &str, detail: String| Error::MissingExport {
        plugin: plugin.to_string(),
        export: export.to_string(),
        detail,
    };
    let kind = |v: ValType| match v {
        ValType::I32 => Some(T::I32),
        ValType::I64 => Some(T::I64),
        _ => None,
    };
    match module.get_export(exports::MEMORY) {
        Some(ExternType::Memory(_)) => {}
        Some(other) => return Err(missing(exports::MEMORY, format!("it is a {other:?}, not a memory"))),
        None => return Err(missing(exports::MEMORY, "missing".into())),
    }
    for (name, params, results) in required {
        if preinitialized && name == exports::INITIALIZE {
            continue;
        }
        let Some(ExternType::Func(ty)) = module.get_export(name) else {
            return Err(missing(name, "missing, or not a function".into()));
        };
        let got_params: Vec<_> = ty.params().map(kind).collect();
        let got_results: Vec<_> = ty.results().map(kind).collect();
        let want_params: Vec<_> = params.iter().copied().map(Some).collect();
        let want_results: Vec<_> = results.iter().copied().map(Some).collect();
        if got_params != want_params || got_results != want_results {
            return Err(missing(name, format!("has type {ty}, expected {params:?} -> {results:?}")));
        }
    }
    Ok(())
}

/// Which export a call goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    Infer,
    Prompt,
    ParseReply,
}

/// One live, loaded instance of a plugin.
pub(crate) struct Instance {
    store: Store<HostState>,
    // Read only to take a snapshot, which needs the compiler.
    #[cfg_attr(not(feature = "compiler"), allow(dead_code))]
    instance: wasmtime::Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    infer: TypedFunc<(i32, i32), i64>,
    prompt: TypedFunc<(i32, i32), i64>,
    parse_reply: TypedFunc<(i32, i32), i64>,
    ctx: CallContext,
}

/// The caps one instance runs under. The sandbox's own type, so that this
/// lowest layer does not depend on the manifest's file format; the plugin
/// layer fills it from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SandboxLimits {
    /// Cap on the guest's linear memory, in bytes.
    pub memory: u64,
    /// Budget of instantiating and loading the models.
    pub load_deadline: Duration,
    /// Cap on the stderr bytes kept per call.
    pub stderr: u64,
    /// Cap on one result frame, in bytes.
    pub output: u64,
}

/// What a new instance loads: the load request and its files' bytes, back to
/// back. The header is written per instance, for the ABI minor the guest
/// says it speaks (a minor-0 guest refuses fields it does not know).
#[derive(Debug, Clone)]
pub(crate) struct LoadPayload {
    pub request: edgecascade_abi::LoadRequest,
    pub files: Vec<u8>,
}

/// What every call needs to know to enforce limits and name errors.
#[derive(Clone)]
pub(crate) struct CallContext {
    pub plugin: String,
    pub limits: SandboxLimits,
    pub epoch_tick: Duration,
}

impl CallContext {
    fn ticks(&self, deadline: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        // One extra tick: the first may already be partly gone when the call starts.
        (deadline.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }

    /// Turns a wasmtime error from a guest call into the error that names its cause.
    fn classify(&self, state: &mut HostState, err: wasmtime::Error, deadline: Duration) -> Error {
        let plugin = self.plugin.clone();
        let panic = state.panic_message.take();
        if state.limiter.hit {
            state.limiter.hit = false;
            return Error::MemoryCap { plugin, cap: self.limits.memory };
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            return match (trap, panic) {
                (Trap::Interrupt, _) => Error::Deadline { plugin, deadline },
                (Trap::UnreachableCodeReached, Some(message)) => Error::GuestPanic { plugin, message },
                (trap, _) => {
                    Error::GuestTrap { plugin, code: crate::error::TrapCode::of(trap), trap: trap.to_string() }
                }
            };
        }
        if let Some(exit) = err.downcast_ref::<GuestExit>() {
            return Error::GuestTrap { plugin, code: crate::error::TrapCode::Exit(exit.0), trap: exit.to_string() };
        }
        Error::GuestTrap { plugin, code: crate::error::TrapCode::Other, trap: format!("{err:#}") }
    }
}

impl Instance {
    /// Instantiates, runs `_initialize`, checks the ABI version, and loads the
    /// models from `load`. With `None`, the module is a pre-initialized
    /// snapshot whose models are already loaded: only the ABI version is checked.
    ///
    /// With `runtime`, an instance of the shared runtime is made first, in the
    /// same store, and the plugin's wasi-nn imports are linked to it.
    pub(crate) fn new(
        pre: &InstancePre<HostState>,
        ctx: CallContext,
        load: Option<&LoadPayload>,
        runtime: Option<&nn::NnRuntime>,
    ) -> Result<Instance> {
        let engine = pre.module().engine();
        let stderr = StderrCapture::new(ctx.limits.stderr as usize);
        let limiter = MemoryLimiter { cap: ctx.limits.memory as usize, hit: false };
        let state = HostState { limiter, panic_message: None, stderr, nn: None };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        let load_deadline = ctx.limits.load_deadline;
        store.set_epoch_deadline(ctx.ticks(load_deadline));

        let plugin = ctx.plugin.clone();
        if let Some(runtime) = runtime {
            let started = runtime
                .pre
                .instantiate(&mut store)
                .map_err(nn::RuntimeFault::Trap)
                .and_then(|instance| nn::NnLink::start(&mut store, instance, runtime.models.clone()));
            match started {
                Ok(link) => store.data_mut().nn = Some(link),
                Err(nn::RuntimeFault::Contract(message)) => {
                    return Err(Error::Instantiate {
                        plugin: plugin.clone(),
                        message: format!("the shared wasi-nn runtime: {message}"),
                        source: None,
                    });
                }
                Err(nn::RuntimeFault::Trap(e)) => {
                    store.data_mut().stderr.drain_to_log(&plugin);
                    return Err(ctx.classify(store.data_mut(), e, load_deadline));
                }
            }
        }
        let instance = pre.instantiate(&mut store).map_err(|e| {
            let state = store.data_mut();
            if state.limiter.hit {
                return Error::MemoryCap { plugin: plugin.clone(), cap: ctx.limits.memory };
            }
            Error::instantiate(&plugin, e)
        })?;
        let func = |store: &mut Store<HostState>, name: &str| {
            instance.get_func(&mut *store, name).ok_or_else(|| Error::MissingExport {
                plugin: plugin.clone(),
                export: name.to_string(),
                detail: "missing".into(),
            })
        };
        let typed_err = |name: &str, e: wasmtime::Error| Error::MissingExport {
            plugin: plugin.clone(),
            export: name.to_string(),
            detail: format!("{e}"),
        };
        let initialize = match load {
            Some(_) => Some(
                func(&mut store, exports::INITIALIZE)?
                    .typed::<(), ()>(&store)
                    .map_err(|e| typed_err(exports::INITIALIZE, e))?,
            ),
            None => None,
        };
        let version = func(&mut store, exports::ABI_VERSION)?
            .typed::<(), i32>(&store)
            .map_err(|e| typed_err(exports::ABI_VERSION, e))?;
        // Optional: a guest without it is minor 0.
        let minor = match instance.get_func(&mut store, exports::ABI_MINOR) {
            Some(f) => Some(f.typed::<(), i32>(&store).map_err(|e| typed_err(exports::ABI_MINOR, e))?),
            None => None,
        };
        let pair = |store: &mut Store<HostState>, name: &str| {
            func(store, name)?.typed::<(i32, i32), i64>(&*store).map_err(|e| typed_err(name, e))
        };
        let load_fn = pair(&mut store, exports::LOAD)?;
        let infer = pair(&mut store, exports::INFER)?;
        let prompt = pair(&mut store, exports::PROMPT)?;
        let parse_reply = pair(&mut store, exports::PARSE_REPLY)?;
        let alloc =
            func(&mut store, exports::ALLOC)?.typed::<i32, i32>(&store).map_err(|e| typed_err(exports::ALLOC, e))?;
        let memory = instance.get_memory(&mut store, exports::MEMORY).ok_or_else(|| Error::MissingExport {
            plugin: plugin.clone(),
            export: exports::MEMORY.into(),
            detail: "missing".into(),
        })?;

        let mut this = Instance { store, instance, memory, alloc, infer, prompt, parse_reply, ctx };
        if let Some(initialize) = initialize {
            this.guarded(load_deadline, |store| initialize.call(store, ()))?;
        }
        let found = this.guarded(load_deadline, |store| version.call(store, ()))?;
        if found as u32 != edgecascade_abi::ABI_VERSION {
            return Err(Error::AbiMismatch {
                plugin: plugin.clone(),
                expected: edgecascade_abi::ABI_VERSION,
                found: found.into(),
            });
        }
        let Some(payload) = load else { return Ok(this) };
        let guest_minor = match minor {
            Some(minor) => this.guarded(load_deadline, |store| minor.call(store, ()))?.max(0) as u32,
            None => 0,
        };
        let header = edgecascade_abi::encode_load_header(&payload.request.clone().for_guest_minor(guest_minor));
        let frame = this.call_raw(load_fn, &[&header, &payload.files], load_deadline)?;
        match frame.decode::<edgecascade_abi::Loaded>() {
            Ok(edgecascade_abi::Outcome::Ok(_)) => Ok(this),
            Ok(edgecascade_abi::Outcome::Error(e)) if e.kind == edgecascade_abi::ErrorKind::Model => {
                Err(Error::ModelRejected { plugin, message: e.message })
            }
            Ok(edgecascade_abi::Outcome::Error(e)) => Err(Error::Guest { plugin, kind: e.kind, message: e.message }),
            Ok(edgecascade_abi::Outcome::Beyond(b)) => {
                Err(Error::MalformedOutput { plugin, detail: format!("load answered 'beyond': {}", b.reason) })
            }
            Err(e) => Err(Error::MalformedOutput { plugin, detail: e.to_string() }),
        }
    }

    /// Calls `infer`, `prompt` or `parse_reply` with an input made of `parts`
    /// (written back to back into guest memory) and returns the result frame.
    /// The call is interrupted after `deadline` (the caller passes at most
    /// `limits.deadline`, less when the request has less time left).
    pub(crate) fn call(&mut self, call: Call, parts: &[&[u8]], deadline: Duration) -> Result<ResultFrame<'static>> {
        let func = match call {
            Call::Infer => self.infer.clone(),
            Call::Prompt => self.prompt.clone(),
            Call::ParseReply => self.parse_reply.clone(),
        };
        self.call_raw(func, parts, deadline)
    }

    fn call_raw(
        &mut self,
        func: TypedFunc<(i32, i32), i64>,
        parts: &[&[u8]],
        deadline: Duration,
    ) -> Result<ResultFrame<'static>> {
        let plugin = self.ctx.plugin.clone();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = i32::try_from(total).map_err(|_| Error::Guest {
            plugin: plugin.clone(),
            kind: edgecascade_abi::ErrorKind::BadInput,
            message: format!("input of {total} bytes is larger than the guest can address"),
        })?;
        let alloc = self.alloc.clone();
        let ptr = self.guarded(deadline, |store| alloc.call(store, len))?;
        if ptr == 0 && len > 0 {
            return Err(Error::MemoryCap { plugin: plugin.clone(), cap: self.ctx.limits.memory });
        }
        let mut offset = ptr as u32 as usize;
        for part in parts {
            self.memory.write(&mut self.store, offset, part).map_err(|_| Error::MalformedOutput {
                plugin: plugin.clone(),
                detail: format!("alloc returned {ptr:#x}, which cannot hold {total} bytes"),
            })?;
            offset += part.len();
        }
        let packed = self.guarded(deadline, |store| func.call(store, (ptr, len)))?;
        self.read_frame(packed)
    }

    /// Reads the result frame at a packed pointer, checking bounds and the output cap.
    fn read_frame(&self, packed: i64) -> Result<ResultFrame<'static>> {
        let plugin = &self.ctx.plugin;
        let (ptr, len) = unpack(packed);
        let malformed = |detail: String| Error::MalformedOutput { plugin: plugin.clone(), detail };
        if u64::from(len) > self.ctx.limits.output {
            return Err(malformed(format!("{len}-byte result exceeds the {}-byte output cap", self.ctx.limits.output)));
        }
        let data = self.memory.data(&self.store);
        let start = ptr as usize;
        let bytes = start.checked_add(len as usize).and_then(|end| data.get(start..end)).ok_or_else(|| {
            malformed(format!("result at {ptr:#x}+{len} is outside the guest's {}-byte memory", data.len()))
        })?;
        let frame = ResultFrame::parse(bytes).map_err(|e| malformed(e.to_string()))?;
        Ok(ResultFrame { status: frame.status, body: frame.body.into_owned().into() })
    }

    /// Runs `f` under the epoch deadline, logs the guest's stderr, and classifies any trap.
    fn guarded<R>(
        &mut self,
        deadline: Duration,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.store.set_epoch_deadline(self.ctx.ticks(deadline));
        let result = f(&mut self.store);
        self.store.data_mut().stderr.drain_to_log(&self.ctx.plugin);
        result.map_err(|e| self.ctx.classify(self.store.data_mut(), e, deadline))
    }

    /// Snapshots this instance's memory and globals into a new module that
    /// starts in this state: the models loaded, `_initialize` already run.
    /// The instance must come from `wizer`'s instrumented module.
    #[cfg(feature = "compiler")]
    pub(crate) fn snapshot(
        &mut self,
        wizer: &wasmtime_wizer::Wizer,
        module: &wasmtime_wizer::ModuleContext<'_>,
    ) -> Result<Vec<u8>> {
        let mut view = SnapshotView { store: &mut self.store, instance: self.instance };
        block_on(wizer.snapshot(module, &mut view))
            .map_err(|e| Error::Snapshot { plugin: self.ctx.plugin.clone(), message: format!("{e:#}") })
    }

    /// The current size of the guest's linear memory, and of its shared
    /// runtime instance's (0 without one), in bytes.
    pub(crate) fn memory_bytes(&self) -> (usize, usize) {
        let runtime = self.store.data().nn.as_ref().map_or(0, |link| link.memory_bytes(&self.store));
        (self.memory.data_size(&self.store), runtime)
    }
}

/// What wizer reads to take a snapshot: the instrumented module's exported globals and memories.
#[cfg(feature = "compiler")]
struct SnapshotView<'a> {
    store: &'a mut Store<HostState>,
    instance: wasmtime::Instance,
}

#[cfg(feature = "compiler")]
impl wasmtime_wizer::InstanceState for SnapshotView<'_> {
    async fn global_get(&mut self, name: &str, _type: wasmtime_wizer::ValType) -> wasmtime_wizer::SnapshotVal {
        use wasmtime::Val;
        use wasmtime_wizer::SnapshotVal;
        // Wizer asks only for globals its instrumentation exported, so they exist.
        let global = self.instance.get_global(&mut *self.store, name).expect("wizer exported this global");
        match global.get(&mut *self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("wizer cannot snapshot a {:?} global", other.ty(&*self.store)),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self.instance.get_memory(&mut *self.store, name).expect("wizer exported this memory");
        contents(memory.data(&*self.store))
    }
}

/// Runs a future that never waits (wizer's snapshot is async only to allow
/// async stores; ours answers at once).
#[cfg(feature = "compiler")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}
