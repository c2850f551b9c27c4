//! A device app in twenty lines: load a plugin, route requests, print where answers came from.
//!
//! ```sh
//! cargo xtask plugins
//! cargo run --release --example embed -- target/plugins/news-topic [http://127.0.0.1:8080/v1]
//! ```

use edgecascade::cloud::{OpenAi, Resilient, RetryPolicy};
use edgecascade::{Input, Mode, Router, Runtime};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "target/plugins/news-topic".into());
    let runtime = Runtime::new(Default::default())?;
    let plugin = runtime.load(&dir)?;
    let mut router = Router::builder(plugin);
    if let Some(url) = args.next() {
        router = router.cloud(Arc::new(Resilient::new(OpenAi::with_url(&url), RetryPolicy::default())));
    }
    let router = router.build();
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
