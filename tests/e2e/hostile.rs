//! Guests written to attack the host. Each attack is contained with a typed
//! error within the deadline, and the same plugin serves the next request.

use crate::support::*;
use edgecascade::{Error, Local, TrapCode};

fn hostile() -> edgecascade::Plugin {
    loaded("hostile")
}

/// The plugin still answers normally after an attack.
fn still_serves(p: &edgecascade::Plugin) {
    assert_eq!(label(&p.infer(&text("ok")).expect("serves after the attack")), "fine");
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let p = hostile();
    let started = std::time::Instant::now();
    let e = p.infer(&text("loop")).unwrap_err();
    assert!(matches!(e, Error::Deadline { .. }), "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "stopped late: {:?}", started.elapsed());
    still_serves(&p);
}

#[test]
fn spinning_on_the_clock_is_stopped_by_the_deadline() {
    let p = hostile();
    let e = p.infer(&text("clock")).unwrap_err();
    assert!(matches!(e, Error::Deadline { .. }), "{e:?}");
    still_serves(&p);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let p = hostile();
    let e = p.infer(&text("alloc")).unwrap_err();
    assert!(matches!(e, Error::MemoryCap { cap, .. } if cap == 64 << 20), "{e:?}");
    still_serves(&p);
}

#[test]
fn panic_reports_its_message() {
    let p = hostile();
    let e = p.infer(&text("panic")).unwrap_err();
    match &e {
        Error::GuestPanic { message, .. } => {
            assert!(message.contains("hostile guest panicked on purpose"), "{message}")
        }
        other => panic!("expected a guest panic, got {other:?}"),
    }
    still_serves(&p);
}

#[test]
fn deep_recursion_is_a_trap() {
    // Rust keeps its frames on a shadow stack in linear memory, so running out
    // of it is an out-of-bounds access; exhausting wasm's own call stack is a
    // stack overflow. Either way the host reports a trap and keeps serving.
    let p = hostile();
    let e = p.infer(&text("recurse")).unwrap_err();
    assert!(
        matches!(&e, Error::GuestTrap { code: TrapCode::StackOverflow | TrapCode::MemoryOutOfBounds, .. }),
        "{e:?}"
    );
    still_serves(&p);
}

#[test]
fn huge_output_is_refused_by_the_output_cap() {
    let p = hostile();
    let e = p.infer(&text("huge")).unwrap_err();
    assert!(matches!(&e, Error::MalformedOutput { detail, .. } if detail.contains("output cap")), "{e:?}");
    still_serves(&p);
}

#[test]
fn nan_confidence_is_malformed_output() {
    let p = hostile();
    let e = p.infer(&text("nan")).unwrap_err();
    // JSON has no NaN: the guest's encoder writes null, which no answer may hold.
    assert!(matches!(&e, Error::MalformedOutput { .. }), "{e:?}");
    still_serves(&p);
}

#[test]
fn the_sandbox_has_no_files_sockets_env_or_args() {
    let p = hostile();
    for attack in ["file", "dir", "socket"] {
        let l = label(&p.infer(&text(attack)).unwrap()).to_string();
        assert!(l.starts_with("denied"), "{attack}: {l}");
    }
    assert_eq!(label(&p.infer(&text("env")).unwrap()), "env=0 args=0");
}

#[test]
fn a_stderr_flood_is_capped_not_fatal() {
    let p = hostile();
    assert_eq!(label(&p.infer(&text("stderr")).unwrap()), "wrote 10 MB to stderr");
}

#[test]
fn bad_input_is_a_guest_error_and_keeps_the_instance() {
    let p = hostile();
    let before = p.pool_stats().discarded;
    let e = p.infer(&text("no such attack")).unwrap_err();
    assert!(matches!(&e, Error::Guest { kind: edgecascade_abi::ErrorKind::BadInput, .. }), "{e:?}");
    still_serves(&p);
    // Other tests may fault concurrently, so only check this call did not discard.
    let _ = before;
}

#[test]
fn attacks_during_load_are_contained_too() {
    let tmp = tempfile::tempdir().unwrap();
    for (attack, check) in [
        ("panic", (|e: &Error| matches!(e, Error::GuestPanic { .. })) as fn(&Error) -> bool),
        ("loop", |e| matches!(e, Error::Deadline { .. })),
        ("alloc", |e| matches!(e, Error::MemoryCap { .. })),
    ] {
        let dir = tmp.path().join(attack);
        let pkg = make_package(
            &dir,
            &hostile_manifest(&format!("\n[config]\non_load = \"{attack}\"\n")),
            &[("hostile.wasm", &hostile_wasm())],
        );
        let e = runtime().load(&pkg).err().unwrap_or_else(|| panic!("{attack} at load must fail"));
        assert!(check(&e), "{attack}: {e:?}");
    }
    still_serves(&hostile());
}

#[test]
fn faulted_instances_are_replaced() {
    let p = hostile();
    let before = p.pool_stats();
    for _ in 0..3 {
        assert!(p.infer(&text("panic")).is_err());
        still_serves(&p);
    }
    let after = p.pool_stats();
    assert!(after.discarded >= before.discarded + 3, "{before:?} -> {after:?}");
    assert!(after.created >= before.created + 3, "{before:?} -> {after:?}");
    assert!(after.live <= p.manifest().limits.instances);
    assert!(matches!(p.infer(&text("ok")), Ok(Local::Answered(_))));
}

#[test]
fn sixteen_hundred_faults_in_a_row_do_not_grow_the_host() {
    // A plugin of its own, so other tests' instances do not blur the measurement.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = make_package(tmp.path(), &hostile_manifest(""), &[("hostile.wasm", &hostile_wasm())]);
    let p = runtime().load(&pkg).unwrap();
    let round = |n: usize| {
        for _ in 0..n {
            assert!(matches!(p.infer(&text("panic")), Err(Error::GuestPanic { .. })));
        }
    };
    let growth = quietest_rss_growth(|| round(400));
    still_serves(&p);
    assert!(p.pool_stats().discarded >= 1600);
    assert!(growth < 16 << 20, "400 faults grew the host by {} MiB", growth >> 20);
}

/// Every instance stuck in an endless loop at once, and more requests than
/// instances: each request still ends by its own deadline (well before the
/// plugin's 5 s call deadline), answered or with a typed error.
#[test]
fn a_pool_of_stuck_instances_holds_no_request_past_its_deadline() {
    use crate::servers::{AMBIGUOUS, Behaviour, FakeCloud, fast_policy};
    use edgecascade::cloud::{HttpConfig, OpenAi, Resilient};
    use edgecascade::{CascadeConfig, Metrics, Mode, Router};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let manifest = format!("{}\n[limits]\ndeadline = \"5s\"\ninstances = 2\n", wat_manifest());
    let stuck = wat_module(1, "(loop (br 0)) (i64.const 0)");
    let pkg = make_package(tmp.path(), &manifest, &[("m.wasm", &stuck)]);
    let plugin = runtime().load(&pkg).unwrap();
    let cloud = FakeCloud::start(Behaviour::Reply("business".into()));
    let mut config = CascadeConfig::for_plugin(&plugin);
    let deadline = Duration::from_millis(400);
    config.deadline = deadline;
    config.cache_entries = 0;
    let client = Arc::new(Resilient::new(OpenAi::new(HttpConfig::new(&cloud.url, "NO_KEY")), fast_policy()));
    let router = Router::new(plugin.clone(), Some(client), config, Metrics::default());
    let replies: Vec<(Duration, edgecascade::Reply)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let reply = router.route(&text(AMBIGUOUS), Mode::Auto);
                    (started.elapsed(), reply)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut busy = 0;
    for (took, reply) in &replies {
        assert!(
            *took <= deadline + Duration::from_millis(300),
            "took {took:?} with a {deadline:?} deadline: {reply:?}"
        );
        let local = reply.local_error.as_deref().expect("the local model cannot answer");
        assert!(local.contains("deadline") || local.contains("busy"), "{local}");
        busy += usize::from(local.contains("busy"));
        assert!(reply.answer.is_some() || reply.cloud_error.is_some(), "answered or a typed cloud error: {reply:?}");
    }
    assert!(busy >= 1, "more requests than instances: some waited and gave up at the deadline");
    assert!(plugin.pool_stats().busy >= busy as u64);
}
