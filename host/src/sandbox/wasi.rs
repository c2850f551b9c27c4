//! The WASI preview 1 that a plugin sees: clocks, randomness and a captured
//! stderr, and nothing else.
//!
//! A plugin computes on the bytes the host hands it. It has nothing to open,
//! list, connect to or wait for. So the sandbox links this deny-by-default
//! WASI rather than a general one (wasmtime-wasi, which brings tokio, cap-std
//! and a filesystem layer into every device build, measured in the README):
//!
//! | functions | what the guest gets |
//! |---|---|
//! | `args_*`, `environ_*` | none: empty lists |
//! | `clock_time_get`, `clock_res_get` | the realtime and monotonic clocks; the CPU-time clocks are `EINVAL` |
//! | `random_get` | the OS's randomness (Rust's `HashMap` seeds from it) |
//! | `fd_write` | stderr is kept in the instance's capped capture, stdout is dropped |
//! | `fd_read` | stdin is at its end |
//! | `fd_fdstat_get` | descriptors 0-2 are character devices |
//! | `fd_prestat_get` | no preopened directories, so the guest's libc opens no file |
//! | `proc_exit` | ends the call with [`GuestExit`] |
//! | `sched_yield` | returns at once |
//! | `poll_oneoff` | `ENOTSUP`: a sleep inside the host would escape the epoch deadline |
//! | every other file, path and socket call | `EBADF`: no such descriptor exists |
//! | `proc_raise` | `ENOTSUP` |
//!
//! Every pointer the guest passes is bounds-checked; one out of its memory is `EFAULT`.

use super::HostState;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};
use wasmtime::{Caller, Engine, FuncType, Linker, Val, ValType};

/// The import module of WASI preview 1.
const MODULE: &str = "wasi_snapshot_preview1";

// WASI preview 1 `errno` values.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EIO: i32 = 29;
const ENOTSUP: i32 = 58;

// `filetype::character_device`, and the rights `fd_read` and `fd_write`.
const CHARACTER_DEVICE: u8 = 2;
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

const STDIN: i32 = 0;
const STDOUT: i32 = 1;
const STDERR: i32 = 2;

/// The guest called `proc_exit`: the call ends, and the host reports the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the guest called exit({0})")]
pub(crate) struct GuestExit(pub i32);

/// The functions that always fail, with their parameter types and errno.
/// The names and signatures are WASI preview 1's (`wasi_snapshot_preview1.witx`).
const REFUSED: &[(&str, &[ValType], i32)] = {
    use ValType::{I32, I64};
    &[
        ("fd_advise", &[I32, I64, I64, I32], EBADF),
        ("fd_allocate", &[I32, I64, I64], EBADF),
        ("fd_close", &[I32], EBADF),
        ("fd_datasync", &[I32], EBADF),
        ("fd_fdstat_set_flags", &[I32, I32], EBADF),
        ("fd_fdstat_set_rights", &[I32, I64, I64], EBADF),
        ("fd_filestat_get", &[I32, I32], EBADF),
        ("fd_filestat_set_size", &[I32, I64], EBADF),
        ("fd_filestat_set_times", &[I32, I64, I64, I32], EBADF),
        ("fd_pread", &[I32, I32, I32, I64, I32], EBADF),
        ("fd_prestat_get", &[I32, I32], EBADF),
        ("fd_prestat_dir_name", &[I32, I32, I32], EBADF),
        ("fd_pwrite", &[I32, I32, I32, I64, I32], EBADF),
        ("fd_readdir", &[I32, I32, I32, I64, I32], EBADF),
        ("fd_renumber", &[I32, I32], EBADF),
        ("fd_seek", &[I32, I64, I32, I32], EBADF),
        ("fd_sync", &[I32], EBADF),
        ("fd_tell", &[I32, I32], EBADF),
        ("path_create_directory", &[I32, I32, I32], EBADF),
        ("path_filestat_get", &[I32, I32, I32, I32, I32], EBADF),
        ("path_filestat_set_times", &[I32, I32, I32, I32, I64, I64, I32], EBADF),
        ("path_link", &[I32, I32, I32, I32, I32, I32, I32], EBADF),
        ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32], EBADF),
        ("path_readlink", &[I32, I32, I32, I32, I32, I32], EBADF),
        ("path_remove_directory", &[I32, I32, I32], EBADF),
        ("path_rename", &[I32, I32, I32, I32, I32, I32], EBADF),
        ("path_symlink", &[I32, I32, I32, I32, I32], EBADF),
        ("path_unlink_file", &[I32, I32, I32], EBADF),
        ("poll_oneoff", &[I32, I32, I32, I32], ENOTSUP),
        ("proc_raise", &[I32], ENOTSUP),
        ("sock_accept", &[I32, I32, I32], EBADF),
        ("sock_recv", &[I32, I32, I32, I32, I32, I32], EBADF),
        ("sock_send", &[I32, I32, I32, I32, I32], EBADF),
        ("sock_shutdown", &[I32, I32], EBADF),
    ]
};

/// Adds WASI preview 1, as this module's table describes it, to `linker`.
pub(crate) fn add_to_linker(engine: &Engine, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for &(name, params, errno) in REFUSED {
        let ty = FuncType::new(engine, params.iter().cloned(), [ValType::I32]);
        linker.func_new(MODULE, name, ty, move |_, _, results| {
            results[0] = Val::I32(errno);
            Ok(())
        })?;
    }
    linker.func_wrap(MODULE, "args_sizes_get", empty_sizes)?;
    linker.func_wrap(MODULE, "environ_sizes_get", empty_sizes)?;
    // With both sizes zero, the guest's buffers are empty: nothing to write.
    linker.func_wrap(MODULE, "args_get", |_: i32, _: i32| SUCCESS)?;
    linker.func_wrap(MODULE, "environ_get", |_: i32, _: i32| SUCCESS)?;
    linker.func_wrap(MODULE, "clock_res_get", |mut caller: Caller<'_, HostState>, id: i32, out: i32| {
        match clock_nanos(id) {
            // Both clocks count nanoseconds.
            Some(_) => write(&mut caller, out, &1u64.to_le_bytes()),
            None => EINVAL,
        }
    })?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, id: i32, _precision: i64, out: i32| match clock_nanos(id) {
            Some(now) => write(&mut caller, out, &now.to_le_bytes()),
            None => EINVAL,
        },
    )?;
    linker.func_wrap(MODULE, "random_get", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let Some((memory, _)) = memory(&mut caller) else { return EFAULT };
        match range(memory.len(), ptr, len).map(|r| getrandom::fill(&mut memory[r])) {
            Some(Ok(())) => SUCCESS,
            // No randomness is an I/O failure of the host, not of the guest.
            Some(Err(_)) => EIO,
            None => EFAULT,
        }
    })?;
    linker.func_wrap(MODULE, "fd_write", fd_write)?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut caller: Caller<'_, HostState>, fd: i32, _iovs: i32, _n: i32, nread: i32| {
            if fd != STDIN {
                return EBADF;
            }
            write(&mut caller, nread, &0u32.to_le_bytes())
        },
    )?;
    linker.func_wrap(MODULE, "fd_fdstat_get", |mut caller: Caller<'_, HostState>, fd: i32, out: i32| {
        let rights = match fd {
            STDIN => RIGHT_FD_READ,
            STDOUT | STDERR => RIGHT_FD_WRITE,
            _ => return EBADF,
        };
        // `fdstat`: filetype u8, flags u16 at 2, rights_base u64 at 8, rights_inheriting u64 at 16.
        let mut stat = [0u8; 24];
        stat[0] = CHARACTER_DEVICE;
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        write(&mut caller, out, &stat)
    })?;
    linker.func_wrap(MODULE, "proc_exit", |code: i32| -> wasmtime::Result<()> { Err(GuestExit(code).into()) })?;
    linker.func_wrap(MODULE, "sched_yield", || SUCCESS)?;
    Ok(())
}

/// `args_sizes_get` and `environ_sizes_get`: no entries, no bytes.
fn empty_sizes(mut caller: Caller<'_, HostState>, count: i32, bytes: i32) -> i32 {
    match write(&mut caller, count, &0u32.to_le_bytes()) {
        SUCCESS => write(&mut caller, bytes, &0u32.to_le_bytes()),
        errno => errno,
    }
}

/// `fd_write`: gathers the iovecs; stderr goes to the capture, stdout nowhere.
fn fd_write(mut caller: Caller<'_, HostState>, fd: i32, iovs: i32, count: i32, written: i32) -> i32 {
    if fd != STDOUT && fd != STDERR {
        return EBADF;
    }
    let Some((memory, state)) = memory(&mut caller) else { return EFAULT };
    let Some(list) = range(memory.len(), iovs, count.wrapping_mul(8)) else { return EFAULT };
    let mut total = 0u32;
    for iovec in memory[list].chunks_exact(8) {
        let ptr = i32::from_le_bytes(iovec[..4].try_into().expect("4 bytes"));
        let len = i32::from_le_bytes(iovec[4..].try_into().expect("4 bytes"));
        let Some(bytes) = range(memory.len(), ptr, len) else { return EFAULT };
        if fd == STDERR {
            state.stderr.push(&memory[bytes]);
        }
        total = total.wrapping_add(len as u32);
    }
    write(&mut caller, written, &total.to_le_bytes())
}

/// Nanoseconds on WASI clock `id`: 0 is realtime, 1 monotonic.
fn clock_nanos(id: i32) -> Option<u64> {
    static START: OnceLock<Instant> = OnceLock::new();
    match id {
        0 => Some(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)),
        1 => Some(START.get_or_init(Instant::now).elapsed().as_nanos() as u64),
        _ => None,
    }
}

/// The guest's memory and the host's state, if the guest exports its memory.
fn memory<'a>(caller: &'a mut Caller<'_, HostState>) -> Option<(&'a mut [u8], &'a mut HostState)> {
    let memory = caller.get_export(edgecascade_abi::exports::MEMORY)?.into_memory()?;
    Some(memory.data_and_store_mut(caller))
}

/// `ptr..ptr+len` as a range of a `size`-byte memory, if it fits.
fn range(size: usize, ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    (end <= size).then_some(start..end)
}

/// Writes `bytes` at `ptr` in the guest's memory: `SUCCESS` or `EFAULT`.
fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> i32 {
    let Some((memory, _)) = memory(caller) else { return EFAULT };
    match range(memory.len(), ptr, bytes.len() as i32) {
        Some(r) => {
            memory[r].copy_from_slice(bytes);
            SUCCESS
        }
        None => EFAULT,
    }
}
