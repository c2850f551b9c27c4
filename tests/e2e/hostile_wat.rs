//! Hostile guests written in WAT, for the attacks that Rust's std would hide
//! or refuse to make: raw WASI calls, broken ABI pointers, odd memories and
//! tables. Each is contained with a typed error (or a harmless result), and
//! the plugin serves the next call.

use crate::support::*;
use edgecascade::{Error, Local, Plugin, TrapCode};
use std::time::{Duration, Instant};

/// The answer frame `{"confidence":0.5}` at 16 (19 bytes), as in [`wat_source`].
const ANSWER: i64 = (16 << 32) | 19;

/// A guest module: WASI imports, then ABI v1 exports whose bodies default to
/// the trivial guest's, with `overrides` as `(export suffix, body)`.
fn guest(memory_pages: u32, overrides: &[(&str, &str)]) -> Vec<u8> {
    let body = |name: &str, default: String| {
        overrides.iter().find(|(n, _)| *n == name).map(|(_, b)| b.to_string()).unwrap_or(default)
    };
    let text = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
          (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
          (import "edgecascade" "panic_message" (func $panic_message (param i32 i32)))
          (memory (export "memory") {memory_pages})
          (table 1 funcref)
          (global $calls (mut i32) (i32.const 0))
          (data (i32.const 0) "\00{{}}")
          (data (i32.const 16) "\00{{\"confidence\":0.5}}")
          (data (i32.const 48) "\00{{\"confidence\":1.5}}")
          (data (i32.const 160) "\00{{\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}]}}")
          (data (i32.const 80) "\00{{\"confidence\":0.5,\"scores\":[{{\"label\":\"a\",\"score\":1e999}}]}}")
          (func (export "_initialize"))
          (func (export "edgecascade_abi_version") (result i32) (i32.const 1))
          (func (export "edgecascade_alloc") (param i32) (result i32) {alloc})
          (func (export "edgecascade_load") (param i32 i32) (result i64) {load})
          (func (export "edgecascade_infer") (param i32 i32) (result i64) {infer})
          (func (export "edgecascade_prompt") (param i32 i32) (result i64) {prompt})
          (func (export "edgecascade_parse_reply") (param i32 i32) (result i64) {parse_reply}))"#,
        alloc = body("alloc", "(i32.const 1024)".into()),
        load = body("load", "(i64.const 3)".into()),
        infer = body("infer", format!("(i64.const {ANSWER})")),
        prompt = body("prompt", format!("(i64.const {ANSWER})")),
        parse_reply = body("parse_reply", format!("(i64.const {ANSWER})")),
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Loads `module` with a 200 ms call deadline and a 16 MiB memory cap.
fn load(tmp: &std::path::Path, module: &[u8]) -> edgecascade::Result<Plugin> {
    let manifest =
        format!("{}\n[limits]\nmemory = \"16 MiB\"\ndeadline = \"200ms\"\nstderr = \"4 KiB\"\n", wat_manifest());
    runtime().load(make_package(tmp, &manifest, &[("m.wasm", module)]))
}

/// An `alloc` body that serves the load (its first call) properly, then gives `bad`.
fn alloc_after_load(bad: &str) -> String {
    format!(
        "(global.set $calls (i32.add (global.get $calls) (i32.const 1))) \
         (if (result i32) (i32.eq (global.get $calls) (i32.const 1)) (then (i32.const 1024)) (else {bad}))"
    )
}

fn loaded_guest(overrides: &[(&str, &str)]) -> (tempfile::TempDir, Plugin) {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = load(tmp.path(), &guest(1, overrides)).unwrap();
    (tmp, plugin)
}

/// The plugin still answers, on whatever instance it has now.
fn still_serves(p: &Plugin) {
    let answer = p.parse_reply("anything").expect("serves after the attack");
    assert_eq!(answer.confidence, 0.5);
}

fn infer(p: &Plugin) -> edgecascade::Result<Local> {
    p.infer(&text("ok"))
}

#[test]
fn proc_exit_during_infer_is_a_trap_not_a_host_exit() {
    let (_tmp, p) = loaded_guest(&[("infer", "(call $proc_exit (i32.const 3)) (i64.const 0)")]);
    let e = infer(&p).unwrap_err();
    assert!(matches!(&e, Error::GuestTrap { code: TrapCode::Exit(3), trap, .. } if trap.contains("exit(3)")), "{e:?}");
    still_serves(&p);
}

#[test]
fn proc_exit_during_load_fails_the_load() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load(tmp.path(), &guest(1, &[("load", "(call $proc_exit (i32.const 0)) (i64.const 0)")])).err().unwrap();
    assert!(matches!(&e, Error::GuestTrap { code: TrapCode::Exit(0), trap, .. } if trap.contains("exit(0)")), "{e:?}");
}

#[test]
fn alloc_returning_0_out_of_bounds_or_over_the_answer_is_contained() {
    // 0 for a non-empty input: the guest is out of memory.
    let (_tmp, p) = loaded_guest(&[("alloc", &alloc_after_load("(i32.const 0)"))]);
    assert!(matches!(infer(&p), Err(Error::MemoryCap { .. })), "{:?}", infer(&p));
    // Past the end of its one page.
    let (_tmp, p) = loaded_guest(&[("alloc", &alloc_after_load("(i32.const 0x7fff0000)"))]);
    let e = infer(&p).unwrap_err();
    assert!(matches!(&e, Error::MalformedOutput { detail, .. } if detail.contains("cannot hold")), "{e:?}");
    // The same at load: the load fails with the same typed errors.
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(load(tmp.path(), &guest(1, &[("alloc", "(i32.const 0)")])), Err(Error::MemoryCap { .. })));
    let oob = load(tmp.path(), &guest(1, &[("alloc", "(i32.const 0x7fff0000)")]));
    assert!(matches!(oob, Err(Error::MalformedOutput { .. })), "{:?}", oob.err());
    // Over its own answer frame: the input overwrites it, and what comes back is no frame.
    let (_tmp, p) = loaded_guest(&[("alloc", "(i32.const 16)")]);
    assert!(matches!(infer(&p), Err(Error::MalformedOutput { .. })), "{:?}", infer(&p));
    // A result frame that points at the input itself.
    let (_tmp, p) = loaded_guest(&[(
        "infer",
        "(i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.extend_i32_u (local.get 1)))",
    )]);
    assert!(matches!(infer(&p), Err(Error::MalformedOutput { .. })), "{:?}", infer(&p));
    still_serves(&p);
}

#[test]
fn panic_message_with_a_bad_pointer_or_length_is_still_a_typed_panic() {
    for (ptr, len) in [("0x7ffffff0", "1000"), ("0", "-1"), ("65530", "100")] {
        let body = format!("(call $panic_message (i32.const {ptr}) (i32.const {len})) unreachable");
        let (_tmp, p) = loaded_guest(&[("infer", &body)]);
        let e = infer(&p).unwrap_err();
        assert!(matches!(&e, Error::GuestPanic { message, .. } if message.len() <= 4096), "{ptr}, {len}: {e:?}");
        still_serves(&p);
    }
}

#[test]
fn poll_oneoff_cannot_sleep_past_the_deadline() {
    // One clock subscription at 256 (id 1 = monotonic, relative, 10 s); events at 512, count at 600.
    let sleep = "(i32.store8 (i32.const 264) (i32.const 0)) \
                 (i32.store (i32.const 272) (i32.const 1)) \
                 (i64.store (i32.const 280) (i64.const 10000000000)) \
                 (i32.store16 (i32.const 296) (i32.const 0)) \
                 (if (i32.eqz (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600))) \
                   (then unreachable)) \
                 (i64.const 0)";
    let (_tmp, p) = loaded_guest(&[("infer", sleep)]);
    let started = Instant::now();
    let e = infer(&p).unwrap_err();
    let took = started.elapsed();
    // Sleeping is refused at once (ENOTSUP), and the guest gave up: no 10 s inside the host.
    assert!(took < Duration::from_millis(200) + Duration::from_millis(300), "took {took:?}: {e:?}");
    assert!(matches!(e, Error::MalformedOutput { .. } | Error::GuestTrap { .. }), "{e:?}");
    still_serves(&p);
}

#[test]
fn stdin_is_empty_and_sockets_that_were_never_given_do_not_exist() {
    // fd_read(0) with one 64-byte iovec at 256 -> buffer 512; nread at 600. Answer only if 0 bytes came.
    let read = "(i32.store (i32.const 256) (i32.const 512)) (i32.store (i32.const 260) (i32.const 64)) \
                (drop (call $fd_read (i32.const 0) (i32.const 256) (i32.const 1) (i32.const 600))) \
                (if (i32.ne (i32.load (i32.const 600)) (i32.const 0)) (then unreachable)) \
                (i64.const 68719476755)";
    let (_tmp, p) = loaded_guest(&[("infer", read)]);
    assert!(matches!(infer(&p), Ok(Local::Answered(_))), "{:?}", infer(&p));
    // Raw socket calls on fds 3 and 4: each must fail (a non-zero errno), or the guest traps.
    let sockets = "(if (i32.eqz (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 600))) (then unreachable)) \
                   (if (i32.eqz (call $sock_recv (i32.const 4) (i32.const 256) (i32.const 1) (i32.const 0) \
                        (i32.const 600) (i32.const 604))) (then unreachable)) \
                   (if (i32.eqz (call $sock_send (i32.const 4) (i32.const 256) (i32.const 1) (i32.const 0) \
                        (i32.const 600))) (then unreachable)) \
                   (i64.const 68719476755)";
    let (_tmp, p) = loaded_guest(&[("infer", sockets)]);
    assert!(matches!(infer(&p), Ok(Local::Answered(_))), "{:?}", infer(&p));
}

#[test]
fn wasi_calls_with_pointers_outside_memory_fail_with_efault() {
    // One page of memory: 65536 is the first address past it. Each call must
    // return EFAULT (21), or EINVAL (28) for the CPU-time clock; else the guest traps.
    let expect = |call: &str, errno: u32| format!("(if (i32.ne {call} (i32.const {errno})) (then unreachable)) ");
    let calls = [
        // The iovec list itself is out of bounds.
        expect("(call $fd_write (i32.const 2) (i32.const 65532) (i32.const 1) (i32.const 600))", 21),
        // The iovec at 256 points at 100 bytes from 65530.
        "(i32.store (i32.const 256) (i32.const 65530)) (i32.store (i32.const 260) (i32.const 100)) ".into(),
        expect("(call $fd_write (i32.const 2) (i32.const 256) (i32.const 1) (i32.const 600))", 21),
        expect("(call $random_get (i32.const 65500) (i32.const 100))", 21),
        expect("(call $random_get (i32.const -1) (i32.const 2))", 21),
        expect("(call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 65535))", 21),
        expect("(call $clock_time_get (i32.const 2) (i64.const 0) (i32.const 600))", 28),
        // And the good calls succeed.
        expect("(call $random_get (i32.const 512) (i32.const 64))", 0),
        expect("(call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 600))", 0),
    ];
    let body = format!("{} (i64.const {ANSWER})", calls.concat());
    let (_tmp, p) = loaded_guest(&[("infer", &body)]);
    assert!(matches!(infer(&p), Ok(Local::Answered(_))), "{:?}", infer(&p));
}

#[test]
fn a_stdout_flood_goes_nowhere() {
    // 4,000 writes of 60 KiB to fd 1 (240 MB in all), then the answer.
    let flood = "(local $i i32) \
                 (i32.store (i32.const 256) (i32.const 1024)) (i32.store (i32.const 260) (i32.const 61440)) \
                 (loop $again \
                   (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 600))) \
                   (local.set $i (i32.add (local.get $i) (i32.const 1))) \
                   (br_if $again (i32.lt_u (local.get $i) (i32.const 4000)))) \
                 (i64.const 68719476755)";
    let tmp = tempfile::tempdir().unwrap();
    let manifest = format!("{}\n[limits]\ndeadline = \"20s\"\n", wat_manifest());
    let p = runtime().load(make_package(tmp.path(), &manifest, &[("m.wasm", &guest(2, &[("infer", flood)]))])).unwrap();
    let before = rss();
    assert!(matches!(infer(&p), Ok(Local::Answered(_))), "{:?}", infer(&p));
    let growth = rss().saturating_sub(before);
    assert!(growth < 64 << 20, "240 MB to stdout grew the host by {} MiB", growth >> 20);
}

#[test]
fn tables_cannot_grow_past_the_limit() {
    // table.grow returns -1 when refused; answer only then.
    let grow = "(if (i32.ne (table.grow (ref.null func) (i32.const 100000000)) (i32.const -1)) (then unreachable)) \
                (i64.const 68719476755)";
    let (_tmp, p) = loaded_guest(&[("infer", grow)]);
    assert!(matches!(infer(&p), Ok(Local::Answered(_))), "{:?}", infer(&p));
}

#[test]
fn a_huge_declared_memory_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    // 1 GiB of initial memory against a 16 MiB cap.
    let e = load(tmp.path(), &guest(16384, &[])).err().unwrap();
    assert!(matches!(e, Error::MemoryCap { .. } | Error::Instantiate { .. }), "{e:?}");
}

#[test]
fn traps_in_prompt_parse_reply_and_alloc_are_typed() {
    let (_tmp, p) = loaded_guest(&[("prompt", "unreachable"), ("parse_reply", "unreachable")]);
    assert!(matches!(p.prompt(&text("x")), Err(Error::GuestTrap { .. })), "{:?}", p.prompt(&text("x")));
    assert!(matches!(p.parse_reply("x"), Err(Error::GuestTrap { .. })));
    assert!(matches!(infer(&p), Ok(Local::Answered(_))), "infer still works");
    let (_tmp, p) = loaded_guest(&[("alloc", &alloc_after_load("unreachable"))]);
    assert!(matches!(infer(&p), Err(Error::GuestTrap { .. })));
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(load(tmp.path(), &guest(1, &[("alloc", "unreachable")])), Err(Error::GuestTrap { .. })));
}

#[test]
fn confidences_outside_0_1_and_non_finite_scores_are_malformed() {
    for frame in [(48i64 << 32) | 19, (80i64 << 32) | 58] {
        let body = format!("(i64.const {frame})");
        let (_tmp, p) = loaded_guest(&[("infer", &body)]);
        assert!(matches!(infer(&p), Err(Error::MalformedOutput { .. })), "{frame}: {:?}", infer(&p));
        still_serves(&p);
    }
}

#[test]
fn a_thousand_deadline_and_a_thousand_memory_cap_faults_do_not_grow_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = format!("{}\n[limits]\nmemory = \"4 MiB\"\ndeadline = \"2ms\"\n", wat_manifest());
    let spin = guest(1, &[("infer", "(loop (br 0)) (i64.const 0)")]);
    let bomb = guest(1, &[("infer", "(drop (memory.grow (i32.const 1000))) unreachable")]);
    for (name, module, expect) in [
        ("deadline", spin, (|e: &Error| matches!(e, Error::Deadline { .. })) as fn(&Error) -> bool),
        ("memory cap", bomb, |e| matches!(e, Error::MemoryCap { .. })),
    ] {
        let p = runtime().load(make_package(&tmp.path().join(name), &manifest, &[("m.wasm", &module)])).unwrap();
        let round = |n: usize| {
            for _ in 0..n {
                let e = infer(&p).unwrap_err();
                assert!(expect(&e), "{name}: {e:?}");
            }
        };
        let growth = quietest_rss_growth(|| round(300));
        still_serves(&p);
        eprintln!("{name}: the quietest of 3 rounds of 300 faults grew RSS by {} KiB", growth >> 10);
        assert!(growth < 16 << 20, "{name}: 300 faults grew the host by {} MiB", growth >> 20);
    }
}

#[test]
fn a_cloud_reply_that_the_plugin_cannot_read_in_time_is_a_deadline_not_a_bad_reply() {
    use crate::servers::{Behaviour, FakeCloud, fast_policy};
    use edgecascade::cloud::{HttpConfig, OpenAi, Resilient};
    use edgecascade::{CascadeConfig, Metrics, Mode, Router, Source};
    // The local answer (confidence 0.5) escalates; the reply parser loops until the request's deadline.
    let prompt = format!("(i64.const {})", (160i64 << 32) | 45);
    let (_tmp, p) = loaded_guest(&[("prompt", &prompt), ("parse_reply", "(loop (br 0)) (i64.const 0)")]);
    let cloud = FakeCloud::start(Behaviour::Reply("a".into()));
    let mut config = CascadeConfig::for_plugin(&p);
    config.threshold = 0.9;
    config.deadline = Duration::from_millis(300);
    let client = std::sync::Arc::new(Resilient::new(OpenAi::new(HttpConfig::new(&cloud.url, "NO_KEY")), fast_policy()));
    let router = Router::new(p, Some(client), config, Metrics::default());
    let started = Instant::now();
    let reply = router.route(&text("ok"), Mode::Auto);
    assert!(started.elapsed() <= Duration::from_millis(300 + 300), "took {:?}", started.elapsed());
    assert_eq!((reply.source, reply.degraded), (Source::LocalFallback, true), "{reply:?}");
    assert_eq!(reply.cloud_error.map(|e| e.kind), Some("deadline"));
}
