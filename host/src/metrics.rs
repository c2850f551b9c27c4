//! Prometheus metrics of the router and the server (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BySource {
    plugin: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    plugin: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByKind {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByWindow {
    plugin: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByCandidate {
    plugin: String,
    candidate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByPlugin {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByVersion {
    plugin: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByOutcome {
    plugin: String,
    outcome: String,
}

/// The metrics registry, cheap to clone and shared by every router of a process.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<BySource, Counter>,
    escalations: Family<ByReason, Counter>,
    latency: Family<BySource, Histogram>,
    cloud_errors: Family<ByKind, Counter>,
    budget: Family<ByWindow, Gauge>,
    confidence: Family<ByPlugin, Histogram>,
    degraded: Family<ByPlugin, Counter>,
    cache_hits: Family<ByPlugin, Counter>,
    log_errors: Family<ByPlugin, Counter>,
    shadow_disagreements: Family<ByCandidate, Counter>,
    shadow_compared: Family<ByCandidate, Counter>,
    audits: Family<ByPlugin, Counter>,
    audit_agreements: Family<ByPlugin, Counter>,
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    serving: Family<ByVersion, Gauge>,
    ship_queued: Gauge,
    ship_spooled: Counter,
    ship_sent: Counter,
    ship_acked: Counter,
    ship_duplicates: Counter,
    ship_dropped: Counter,
    link_up: Gauge,
    channel_updates: Family<ByOutcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgecascade");
        let requests = Family::<BySource, Counter>::default();
        let escalations = Family::<ByReason, Counter>::default();
        let latency = Family::<BySource, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        let cloud_errors = Family::<ByKind, Counter>::default();
        let budget = Family::<ByWindow, Gauge>::default();
        let confidence =
            Family::<ByPlugin, Histogram>::new_with_constructor(|| Histogram::new((1..=10).map(|i| i as f64 / 10.0)));
        let degraded = Family::<ByPlugin, Counter>::default();
        let cache_hits = Family::<ByPlugin, Counter>::default();
        let log_errors = Family::<ByPlugin, Counter>::default();
        let shadow_disagreements = Family::<ByCandidate, Counter>::default();
        let shadow_compared = Family::<ByCandidate, Counter>::default();
        let audits = Family::<ByPlugin, Counter>::default();
        let audit_agreements = Family::<ByPlugin, Counter>::default();
        let serving = Family::<ByVersion, Gauge>::default();
        let (ship_queued, ship_sent, ship_acked) = (Gauge::default(), Counter::default(), Counter::default());
        let ship_spooled = Counter::default();
        let (ship_duplicates, ship_dropped, link_up) = (Counter::default(), Counter::default(), Gauge::default());
        let channel_updates = Family::<ByOutcome, Counter>::default();
        registry.register(
            "package_version",
            "1 for the package version each plugin serves (the label), absent for versions no longer served",
            serving.clone(),
        );
        registry.register(
            "ship_queued",
            "Escalation records in the spool that the fleet stream has not acknowledged",
            ship_queued.clone(),
        );
        registry.register(
            "ship_spooled",
            "Escalation records written to the spool (each escalation and audit the cloud answered)",
            ship_spooled.clone(),
        );
        registry.register(
            "ship_sent",
            "Escalation records published to the fleet stream, resends included",
            ship_sent.clone(),
        );
        registry.register("ship_acknowledged", "Escalation records the fleet stream acknowledged", ship_acked.clone());
        registry.register(
            "ship_duplicates",
            "Acknowledged records the stream had already stored (a resend after a lost acknowledgement)",
            ship_duplicates.clone(),
        );
        registry.register(
            "ship_dropped",
            "Escalation records dropped unsent because the spool reached its cap (the oldest go first)",
            ship_dropped.clone(),
        );
        registry.register("fleet_link_up", "1 while the connection to the fleet's NATS server is up", link_up.clone());
        registry.register(
            "channel_updates",
            "Package versions seen on the fleet channel, by plugin and outcome (promoted, refused)",
            channel_updates.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by plugin and source (local, cloud, local_fallback)",
            requests.clone(),
        );
        registry.register("escalations", "Requests sent to the cloud tier, by reason", escalations.clone());
        registry.register("request_latency_seconds", "End-to-end request latency, by source", latency.clone());
        registry.register("cloud_errors", "Failed cloud calls, by kind", cloud_errors.clone());
        registry.register(
            "cloud_budget_remaining",
            "Cloud calls left in the current window (unlimited windows are absent)",
            budget.clone(),
        );
        registry.register("local_confidence", "Confidence of local answers", confidence.clone());
        registry.register(
            "degraded",
            "Answers returned degraded (a local fallback after a cloud failure)",
            degraded.clone(),
        );
        registry.register("cloud_cache_hits", "Escalations answered from the cloud-answer cache", cache_hits.clone());
        registry.register(
            "escalation_log_errors",
            "Escalations that could not be written to the log",
            log_errors.clone(),
        );
        registry.register(
            "shadow_compared",
            "Local answers also computed by a shadow candidate, by plugin and candidate version",
            shadow_compared.clone(),
        );
        registry.register(
            "shadow_disagreements",
            "Local answers whose label the shadow candidate did not give, by plugin and candidate version",
            shadow_disagreements.clone(),
        );
        registry.register(
            "audits",
            "Confident local answers also sent to the cloud as an audit sample (policy.audit_rate)",
            audits.clone(),
        );
        registry.register(
            "audit_agreements",
            "Audited local answers whose label the cloud also gave: agreements / audits estimates local accuracy \
             against the large model",
            audit_agreements.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                escalations,
                latency,
                cloud_errors,
                budget,
                confidence,
                degraded,
                cache_hits,
                log_errors,
                shadow_disagreements,
                shadow_compared,
                audits,
                audit_agreements,
                serving,
                ship_queued,
                ship_spooled,
                ship_sent,
                ship_acked,
                ship_duplicates,
                ship_dropped,
                link_up,
                channel_updates,
            }),
        }
    }
}

fn p(plugin: &str) -> ByPlugin {
    ByPlugin { plugin: plugin.to_string() }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    pub(crate) fn request(&self, plugin: &str, source: &str, seconds: f64) {
        let labels = BySource { plugin: plugin.to_string(), source: source.to_string() };
        self.inner.requests.get_or_create(&labels).inc();
        self.inner.latency.get_or_create(&labels).observe(seconds);
    }

    pub(crate) fn escalation(&self, plugin: &str, reason: &str) {
        self.inner
            .escalations
            .get_or_create(&ByReason { plugin: plugin.to_string(), reason: reason.to_string() })
            .inc();
    }

    pub(crate) fn cloud_error(&self, plugin: &str, kind: &str) {
        self.inner.cloud_errors.get_or_create(&ByKind { plugin: plugin.to_string(), kind: kind.to_string() }).inc();
    }

    pub(crate) fn budget(&self, plugin: &str, window: &str, remaining: u32) {
        let labels = ByWindow { plugin: plugin.to_string(), window: window.to_string() };
        self.inner.budget.get_or_create(&labels).set(remaining as i64);
    }

    pub(crate) fn confidence(&self, plugin: &str, confidence: f32) {
        self.inner.confidence.get_or_create(&p(plugin)).observe(confidence as f64);
    }

    pub(crate) fn degraded(&self, plugin: &str) {
        self.inner.degraded.get_or_create(&p(plugin)).inc();
    }

    pub(crate) fn cache_hit(&self, plugin: &str) {
        self.inner.cache_hits.get_or_create(&p(plugin)).inc();
    }

    pub(crate) fn log_error(&self, plugin: &str) {
        self.inner.log_errors.get_or_create(&p(plugin)).inc();
    }

    pub(crate) fn shadow(&self, plugin: &str, candidate: &str, agreed: bool) {
        let labels = ByCandidate { plugin: plugin.to_string(), candidate: candidate.to_string() };
        self.inner.shadow_compared.get_or_create(&labels).inc();
        // Created on the first comparison, so a candidate that always agrees shows 0, not nothing.
        let disagreements = self.inner.shadow_disagreements.get_or_create(&labels);
        if !agreed {
            disagreements.inc();
        }
    }

    pub(crate) fn audit(&self, plugin: &str, agreed: bool) {
        self.inner.audits.get_or_create(&p(plugin)).inc();
        // Created with the first audit, so a plugin that never agrees shows 0, not nothing.
        let agreements = self.inner.audit_agreements.get_or_create(&p(plugin));
        if agreed {
            agreements.inc();
        }
    }

    /// Marks `version` as the one `plugin` serves (and `replaced`, if any, as no longer served).
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn serving(&self, plugin: &str, replaced: Option<&str>, version: &str) {
        if let Some(old) = replaced.filter(|old| *old != version) {
            self.inner.serving.remove(&ByVersion { plugin: plugin.to_string(), version: old.to_string() });
        }
        self.inner
            .serving
            .get_or_create(&ByVersion { plugin: plugin.to_string(), version: version.to_string() })
            .set(1);
    }

    /// The shipper's counters: what it did since the last call, and the spool's depth now.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) fn shipping(&self, queued: u64, spooled: u64, sent: u64, acked: u64, duplicates: u64, dropped: u64) {
        self.inner.ship_queued.set(queued as i64);
        self.inner.ship_spooled.inc_by(spooled);
        self.inner.ship_sent.inc_by(sent);
        self.inner.ship_acked.inc_by(acked);
        self.inner.ship_duplicates.inc_by(duplicates);
        self.inner.ship_dropped.inc_by(dropped);
    }

    /// Whether the fleet link is up.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) fn link(&self, up: bool) {
        self.inner.link_up.set(i64::from(up));
    }

    /// A channel update of `plugin` ended in `outcome` (`promoted`, `refused`).
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) fn channel_update(&self, plugin: &str, outcome: &str) {
        let labels = ByOutcome { plugin: plugin.to_string(), outcome: outcome.to_string() };
        self.inner.channel_updates.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use std::collections::BTreeSet;

    /// The series names the registry can expose, from its `# TYPE` lines. A family is rendered
    /// only once it has a series, so each one is given one first.
    fn exposed() -> BTreeSet<String> {
        let metrics = Metrics::default();
        metrics.request("p", "local", 0.001);
        metrics.escalation("p", "low_confidence");
        metrics.cloud_error("p", "timeout");
        metrics.budget("p", "minute", 1);
        metrics.confidence("p", 0.5);
        metrics.degraded("p");
        metrics.cache_hit("p");
        metrics.log_error("p");
        metrics.shadow("p", "2", false);
        metrics.audit("p", true);
        metrics.serving("p", None, "1");
        metrics.channel_update("p", "promoted");
        let mut names = BTreeSet::new();
        for line in metrics.render().lines() {
            let mut words = line.strip_prefix("# TYPE ").unwrap_or_default().split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
        names
    }

    /// The Grafana dashboard must only chart metrics that exist, so that a rename breaks this test
    /// and not an operator's dashboard.
    #[test]
    fn the_grafana_dashboard_charts_only_exposed_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana/edgecascade-fleet.json")).unwrap();
        let exposed = exposed();
        let metric = regex::Regex::new(r"edgecascade_[a-z_]+").unwrap();
        let mut used = BTreeSet::new();
        let mut queries = vec![];
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                queries.push(target["expr"].as_str().unwrap().to_string());
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            queries.extend(variable["definition"].as_str().map(str::to_string));
        }
        for query in &queries {
            used.extend(metric.find_iter(query).map(|m| m.as_str().to_string()));
        }
        let unknown: Vec<_> = used.iter().filter(|m| !exposed.contains(*m)).collect();
        assert!(unknown.is_empty(), "the dashboard charts metrics /metrics does not expose: {unknown:?}");
        // Every shipping counter the fleet docs promise is on the dashboard.
        for name in
            ["ship_queued", "ship_sent_total", "ship_acknowledged_total", "ship_dropped_total", "package_version"]
        {
            assert!(used.contains(&format!("edgecascade_{name}")), "edgecascade_{name} is not charted");
        }
    }
}
