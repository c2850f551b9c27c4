//! Host overhead per request: a guest that does almost nothing, through `Plugin::infer` and
//! through `Router::route(LocalOnly)`, beside the same calls on a real plugin.

use crate::common::{TextVariants, load, plugin_dir, test_text};
use criterion::Criterion;
use edgecascade::{CascadeConfig, Input, Local, Metrics, Mode, Plugin, Router, Source};
use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;

/// The plugin and a local-only router over it, checked to answer `input` locally.
fn setup(name: &str, input: &Input) -> (Plugin, Router) {
    let plugin = load(&plugin_dir(name));
    assert!(matches!(plugin.infer(input), Ok(Local::Answered(_))), "{name} did not answer");
    let router = Router::new(plugin.clone(), None, CascadeConfig::for_plugin(&plugin), Metrics::default());
    let reply = router.route(input, Mode::LocalOnly);
    assert!(reply.answer.is_some() && reply.source == Source::Local, "{name}: {reply:?}");
    (plugin, router)
}

/// `host_overhead/{hostile_ok,news_topic}_{infer,route}`.
pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_overhead");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, label, texts) in [
        ("hostile", "hostile_ok", TextVariants::new("ok")),
        ("news-topic", "news_topic", TextVariants::new(&test_text("news"))),
    ] {
        let loaded: OnceCell<(Plugin, Router)> = OnceCell::new();
        group.bench_function(format!("{label}_infer"), |b| {
            let (plugin, _) = loaded.get_or_init(|| setup(name, texts.first()));
            b.iter(|| plugin.infer(black_box(texts.next_input())))
        });
        group.bench_function(format!("{label}_route"), |b| {
            let (_, router) = loaded.get_or_init(|| setup(name, texts.first()));
            b.iter(|| router.route(black_box(texts.next_input()), Mode::LocalOnly))
        });
    }
    group.finish();
}
