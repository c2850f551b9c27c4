//! Measures a device's memory footprint: resident memory of the process with
//! one warm plugin, and what each extra instance adds. `cargo xtask footprint`
//! runs it on a plugin with and without its precompiled snapshot.
//!
//! ```sh
//! cargo run --release --example footprint -- target/plugins/news-topic [instances]
//! ```
//! Prints one JSON object.

use edgecascade::{Input, Runtime, RuntimeConfig};

/// This process's resident set, in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "target/plugins/news-topic".into());
    let extra: usize = args.next().map_or(Ok(8), |n| n.parse())?;
    let started = std::time::Instant::now();
    let before_runtime = rss();
    // The packages measured are the caller's own (xtask footprint precompiles them itself).
    let runtime = Runtime::new(RuntimeConfig { trust_native_code: true, ..RuntimeConfig::default() })?;
    let plugin = runtime.load(&dir)?;
    // One request, so the warm instance has touched what serving touches.
    plugin.infer(&Input::text("The central bank raised interest rates again"))?;
    let first_answer = started.elapsed();
    let warm = rss();
    // Hold `extra` more live instances, as the pool makes them under concurrent load.
    let mut instances = Vec::new();
    let instance_started = std::time::Instant::now();
    for _ in 0..extra {
        instances.push(plugin.fresh_instance_for_bench()?);
    }
    let per_instance_time = instance_started.elapsed() / extra.max(1) as u32;
    let with_extra = rss();
    let report = serde_json::json!({
        "plugin": plugin.name(),
        "load": plugin.load_report(),
        "rss_before_runtime_bytes": before_runtime,
        "rss_one_warm_plugin_bytes": warm,
        "extra_instances": extra,
        "rss_per_extra_instance_bytes": (with_extra.saturating_sub(warm)) / extra.max(1) as u64,
        "instance_memory_bytes": plugin.instance_memory().first().copied().unwrap_or(0),
        "instance_create_us": per_instance_time.as_secs_f64() * 1e6,
        "first_answer_ms": first_answer.as_secs_f64() * 1e3,
    });
    println!("{report}");
    drop(instances);
    Ok(())
}
