//! A device app in twenty lines: load a plugin, route requests, print where answers came from.
//!
//! ```sh
//! cargo xtask plugins
//! cargo run --release --example embed -- target/plugins/news-topic [http://127.0.0.1:8080/v1]
//! ```

use edgecascade::cloud::{CloudClient, OpenAi, Resilient, RetryPolicy};
use edgecascade::{CascadeConfig, Input, Metrics, Mode, Router, Runtime};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "target/plugins/news-topic".into());
    let runtime = Runtime::new(Default::default())?;
    let plugin = runtime.load(&dir)?;
    let cloud = args
        .next()
        .map(|url| Arc::new(Resilient::new(OpenAi::with_url(&url), RetryPolicy::default())) as Arc<dyn CloudClient>);
    let router = Router::new(plugin.clone(), cloud, CascadeConfig::for_plugin(&plugin), Metrics::default());
    for line in std::io::stdin().lines() {
        let reply = router.route(&Input::text(line?), Mode::Auto);
        let label = reply.answer.as_ref().and_then(|a| a.label.clone()).unwrap_or_default();
        println!(
            "{label:<14} {:?} ({:?}{})",
            reply.source,
            reply.reason,
            if reply.degraded { ", degraded" } else { "" }
        );
    }
    Ok(())
}
