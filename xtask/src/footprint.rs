//! `cargo xtask footprint`: the README's footprint table, binary sizes, resident memory and the
//! time to a first answer, with and without precompiled plugins.

use super::{Project, RUNTIME_ONLY, run, step};
use anyhow::Result;
use std::path::Path;
use std::process::Command;

impl Project {
    /// The README's footprint table: sizes, memory, and time to the first answer.
    pub(crate) fn footprint(&self) -> Result<()> {
        let (arm_host, _) = self.edge()?;
        step("building the runtime-only host for this machine (its own target dir)");
        let runtime_only_dir = self.target.join("runtime-only");
        run(Command::new("cargo")
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &runtime_only_dir)
            .args(RUNTIME_ONLY))?;
        let work = self.target.join("footprint");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let stripped = |path: &Path, strip: &str| -> Result<u64> {
            let copy = work.join(format!("stripped-{}", path.file_name().unwrap_or_default().to_string_lossy()));
            std::fs::copy(path, &copy)?;
            run(Command::new(strip).arg(&copy))?;
            Ok(std::fs::metadata(&copy)?.len())
        };
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let release = self.target.join("release");
        println!("| binary | size (stripped) |\n|---|---|");
        println!("| x86_64 host, full (Cranelift) | {} |", mb(stripped(&self.binary(), "strip")?));
        let x86_runtime_only = runtime_only_dir.join("release/edgecascade");
        println!("| x86_64 host, runtime-only | {} |", mb(stripped(&x86_runtime_only, "strip")?));
        println!("| aarch64 host, runtime-only | {} |", mb(stripped(&arm_host, "aarch64-linux-gnu-strip")?));
        println!(
            "| libedgecascade_capi.so (x86_64, full) | {} |",
            mb(stripped(&release.join("libedgecascade_capi.so"), "strip")?)
        );

        // The same package twice: compiled on the device (from the module cache), and precompiled.
        let plain = work.join("news-topic");
        let precompiled = work.join("news-topic-precompiled");
        for dir in [&plain, &precompiled] {
            run(Command::new("cp").arg("-r").arg(self.plugins_dir().join("news-topic")).arg(dir))?;
            let _ = std::fs::remove_dir_all(dir.join("precompiled"));
        }
        run(Command::new(self.binary()).arg("compile").arg(&precompiled))?;
        let cache = self.target.join("module-cache");
        let example = release.join("examples/footprint");
        println!(
            "\n| news-topic | RSS, one warm plugin | RSS per extra instance | new instance | first answer (in process) |"
        );
        println!("|---|---|---|---|---|");
        for (name, dir) in [("compiled on device (cached)", &plain), ("precompiled snapshot", &precompiled)] {
            let out = Command::new(&example).arg(dir).arg("8").env("EDGECASCADE_CACHE_DIR", &cache).output()?;
            anyhow::ensure!(out.status.success(), "footprint example: {}", String::from_utf8_lossy(&out.stderr));
            let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            println!(
                "| {name} | {:.1} MiB | {:.2} MiB | {:.0} µs | {:.0} ms |",
                f("rss_one_warm_plugin_bytes") / 1048576.0,
                f("rss_per_extra_instance_bytes") / 1048576.0,
                f("instance_create_us"),
                f("first_answer_ms"),
            );
        }

        // Whole processes: start, load, answer one request, exit.
        let time_run = |dir: &Path, cache: Option<&Path>| -> Result<f64> {
            let mut cmd = Command::new(self.binary());
            // This run's own artifact, made above, is unsigned.
            cmd.arg("--trust-native-code");
            match cache {
                Some(c) => cmd.env("EDGECASCADE_CACHE_DIR", c),
                None => cmd.arg("--no-cache"),
            };
            let started = std::time::Instant::now();
            let out =
                cmd.args(["run", "--mode", "local", "--text", "Rates rose again", "--plugin"]).arg(dir).output()?;
            anyhow::ensure!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
            Ok(started.elapsed().as_secs_f64() * 1e3)
        };
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let runs = |dir: &Path, cache: Option<&Path>| -> Result<f64> {
            Ok(median((0..7).map(|_| time_run(dir, cache)).collect::<Result<Vec<_>>>()?))
        };
        println!("\n| process start to first answer (`edgecascade run`, median of 7) | time |\n|---|---|");
        // A private cache of its own, where the first run leaves the verified copy of the code.
        let aot_cache = work.join("aot-cache");
        let _ = std::fs::remove_dir_all(&aot_cache);
        time_run(&precompiled, Some(&aot_cache))?;
        println!(
            "| precompiled snapshot, the host's verified copy mapped | {:.0} ms |",
            runs(&precompiled, Some(&aot_cache))?
        );
        println!("| precompiled snapshot, artifact read and hashed (no cache) | {:.0} ms |", runs(&precompiled, None)?);
        println!("| compiled module from the cache | {:.0} ms |", runs(&plain, Some(&cache))?);
        println!("| first run ever: Cranelift compile (1 run) | {:.0} ms |", time_run(&plain, None)?);
        Ok(())
    }
}
