//! A hostile plugin. Each input text names an attack on the host; `ok` answers
//! normally so tests can check the host still serves after an attack. The
//! manifest's `[config] on_load` picks an attack to run during load instead.

use edgecascade_guest::{Answer, Error, Input, LoadContext, Plugin, export_plugin};
use std::hint::black_box;

struct Hostile;

fn attack(name: &str) -> Result<Answer, Error> {
    let answer = |label: String| Answer { label: Some(label), confidence: 0.9, ..Answer::default() };
    match name {
        "ok" => Ok(answer("fine".into())),
        "loop" => loop {
            black_box(());
        },
        "clock" => loop {
            black_box(std::time::Instant::now());
        },
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        "recurse" => Ok(answer(format!("{}", recurse(black_box(1))))),
        "panic" => panic!("hostile guest panicked on purpose"),
        // Over the host's 1 MiB output cap, well under the 64 MiB memory cap.
        "huge" => Ok(answer("x".repeat(4 << 20))),
        "stderr" => {
            let line = "y".repeat(1023);
            for _ in 0..10_000 {
                eprintln!("{line}");
            }
            Ok(answer("wrote 10 MB to stderr".into()))
        }
        "file" => Ok(answer(match std::fs::read("/etc/passwd") {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("denied: {e}"),
        })),
        "dir" => Ok(answer(match std::fs::read_dir(".") {
            Ok(_) => "listed".into(),
            Err(e) => format!("denied: {e}"),
        })),
        "socket" => Ok(answer(match std::net::TcpStream::connect("127.0.0.1:80") {
            Ok(_) => "connected".into(),
            Err(e) => format!("denied: {e}"),
        })),
        "env" => Ok(answer(format!("env={} args={}", std::env::vars_os().count(), std::env::args_os().count()))),
        "nan" => Ok(Answer { confidence: f32::NAN, ..answer("nan".into()) }),
        other => Err(Error::bad_input(format!("unknown attack {other:?}"))),
    }
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: exhaust the stack
fn recurse(depth: u64) -> u64 {
    let pad = black_box([depth; 64]);
    recurse(depth + 1) + pad[(depth % 64) as usize]
}

impl Plugin for Hostile {
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
        if let Some(name) = ctx.config().get("on_load").and_then(|v| v.as_str()) {
            attack(name)?;
        }
        Ok(Hostile)
    }

    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
        attack(input.text()?.trim())
    }
}

export_plugin!(Hostile);
