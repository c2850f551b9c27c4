//! Replaying a labelled set through the cascade: accuracy of local-only,
//! cloud-only and the cascade, the share served locally, cloud calls and
//! tokens, latency per source, and RouteLLM's PGR (the share of the
//! small→large accuracy gap the cascade recovers).
//!
//! Each row is answered once locally and once by the cloud; the cascade at any
//! threshold is then the router's own decision applied to those answers, so a
//! sweep over thresholds costs nothing more.
//!
//! Without a cloud, [`local_report`] says what a plugin author needs before
//! there is one: the local model's accuracy, how well its confidence is
//! calibrated (ECE), and, at each threshold, the share it keeps and its
//! accuracy on what it keeps.

use crate::plugin::Input;
use crate::router::policy::{self, LocalOutcome};
use crate::router::{Mode, Router};
use serde::Serialize;

/// One labelled example.
#[derive(Debug, Clone)]
pub struct Row {
    /// The input.
    pub input: Input,
    /// The expected label.
    pub label: String,
}

impl Row {
    /// Reads a JSONL line: `{"text": …, "label": …}`, or any JSON object with a
    /// `label` (the rest is the plugin's JSON input, as for digits' `pixels`).
    pub fn from_json_line(line: &str) -> Result<Row, RowError> {
        let mut value: serde_json::Value = serde_json::from_str(line).map_err(RowError::NotJson)?;
        let label = value
            .get("label")
            .and_then(|l| l.as_str().map(str::to_string).or_else(|| l.as_i64().map(|i| i.to_string())))
            .ok_or(RowError::NoLabel)?;
        if let Some(obj) = value.as_object_mut() {
            obj.remove("label");
        }
        let input = match value.get("text").and_then(|t| t.as_str()) {
            Some(text) => Input::text(text),
            None => Input::json(&value),
        };
        Ok(Row { input, label })
    }
}

/// Why a line is not a labelled row.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The object has no `label` that is a string or a whole number.
    #[error("no \"label\" (a string or a whole number)")]
    NoLabel,
}

/// What each tier made of one row.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    /// The expected label.
    pub truth: String,
    /// What the local model made of the row: the input to the routing decision.
    pub local: LocalOutcome,
    /// The local label; `None` when the plugin declined or failed, or answered without a label.
    pub local_label: Option<String>,
    /// Milliseconds in the local model.
    pub local_ms: f64,
    /// The cloud label; `None` when the cloud failed.
    pub cloud_label: Option<String>,
    /// Milliseconds in the cloud.
    pub cloud_ms: f64,
    /// Tokens the cloud call used.
    pub cloud_tokens: u64,
}

impl Observation {
    /// Whether the router keeps this row local at `threshold`: the router's
    /// own decision ([`policy::decide`]) in [`Mode::Auto`].
    pub fn local_at(&self, threshold: f32) -> bool {
        !policy::decide(self.local, Mode::Auto, threshold).escalates()
    }

    /// The local confidence (0 when there was no answer).
    pub fn local_confidence(&self) -> f32 {
        self.local.confidence()
    }

    /// The label the cascade returns at `threshold` (a failed cloud falls back to local).
    pub fn cascade_label(&self, threshold: f32) -> Option<&str> {
        if self.local_at(threshold) {
            self.local_label.as_deref()
        } else {
            self.cloud_label.as_deref().or(self.local_label.as_deref())
        }
    }
}

/// How many cloud calls `edgecascade eval` and `calibrate` keep in flight
/// unless told otherwise (`--concurrency`).
///
/// A cloud call takes 0.1-2 s and a local answer well under a millisecond, so
/// a replay is as slow as its cloud calls, one after another. Four in flight
/// keep a local tier's two instances busy and stay polite to a hosted API.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Answers every row locally and, when the router has a cloud, in the cloud.
/// `router` should have its answer cache off, so cloud-only numbers are real calls.
///
/// Local answers come first, one at a time, so their latencies are the
/// plugin's own. The cloud answers follow with up to `concurrency` calls in
/// flight (1: one at a time, in row order); each row's observation is the same
/// whatever the concurrency, and the result is in row order. `progress` is
/// called once per row, when its last answer is in.
pub fn observe(router: &Router, rows: &[Row], concurrency: usize, progress: impl Fn() + Sync) -> Vec<Observation> {
    let has_cloud = router.has_cloud();
    let local: Vec<_> = rows
        .iter()
        .map(|row| {
            let reply = router.route(&row.input, Mode::LocalOnly);
            if !has_cloud {
                progress();
            }
            reply
        })
        .collect();
    let cloud = has_cloud.then(|| {
        map_in_order(rows, concurrency, |row| {
            let reply = router.route(&row.input, Mode::CloudOnly);
            progress();
            reply
        })
    });
    let mut cloud = cloud.map(Vec::into_iter);
    rows.iter()
        .zip(local)
        .map(|(row, local)| {
            let cloud = cloud.as_mut().and_then(Iterator::next);
            let outcome = match (&local.answer, &local.beyond) {
                (Some(answer), _) => LocalOutcome::Answered { confidence: answer.confidence },
                (None, Some(_)) => LocalOutcome::Beyond,
                (None, None) => LocalOutcome::Failed,
            };
            Observation {
                truth: row.label.clone(),
                local: outcome,
                local_label: local.answer.as_ref().and_then(|a| a.label.clone()),
                local_ms: local.latency_ms.local.unwrap_or(0.0),
                cloud_label: cloud
                    .as_ref()
                    .filter(|c| c.cloud_error.is_none())
                    .and_then(|c| c.answer.as_ref().and_then(|a| a.label.clone())),
                cloud_ms: cloud.as_ref().and_then(|c| c.latency_ms.cloud).unwrap_or(0.0),
                cloud_tokens: cloud.as_ref().and_then(|c| c.tokens).map(|t| t.total_tokens as u64).unwrap_or(0),
            }
        })
        .collect()
}

/// `f` over `items` on up to `threads` threads, the results in the items' order.
fn map_in_order<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => done.into_iter().for_each(|(i, r)| results[i] = Some(r)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results.into_iter().map(|r| r.expect("every index is taken by one worker")).collect()
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles { p50: at(0.5), p95: at(0.95) }
}

/// The cascade at one threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The threshold.
    pub threshold: f32,
    /// Rows.
    pub rows: usize,
    /// Accuracy of the local model alone (a declined row counts as wrong).
    pub local_accuracy: f64,
    /// Accuracy of the cloud alone (a failed call counts as wrong).
    pub cloud_accuracy: f64,
    /// Accuracy of the cascade.
    pub cascade_accuracy: f64,
    /// Share of rows the cascade keeps local.
    pub local_share: f64,
    /// Cloud calls the cascade makes.
    pub cloud_calls: usize,
    /// Cloud calls cloud-only makes (one per row).
    pub cloud_only_calls: usize,
    /// Tokens the cascade spends.
    pub cascade_tokens: u64,
    /// Tokens cloud-only spends.
    pub cloud_only_tokens: u64,
    /// The share of the local→cloud accuracy gap the cascade recovers.
    pub pgr: f64,
    /// Latency of rows served locally.
    pub local_latency: Percentiles,
    /// Latency of escalated rows (local attempt plus cloud).
    pub escalated_latency: Percentiles,
}

/// The cascade at `threshold`.
pub fn summarize(obs: &[Observation], threshold: f32) -> Summary {
    let n = obs.len().max(1) as f64;
    let hits = |f: &dyn Fn(&Observation) -> Option<&str>| {
        obs.iter().filter(|o| f(o) == Some(o.truth.as_str())).count() as f64 / n
    };
    let local_accuracy = hits(&|o| o.local_label.as_deref());
    let cloud_accuracy = hits(&|o| o.cloud_label.as_deref());
    let cascade_accuracy = hits(&|o| o.cascade_label(threshold));
    let local_rows: Vec<&Observation> = obs.iter().filter(|o| o.local_at(threshold)).collect();
    let escalated: Vec<&Observation> = obs.iter().filter(|o| !o.local_at(threshold)).collect();
    let gap = cloud_accuracy - local_accuracy;
    Summary {
        threshold,
        rows: obs.len(),
        local_accuracy,
        cloud_accuracy,
        cascade_accuracy,
        local_share: local_rows.len() as f64 / n,
        cloud_calls: escalated.len(),
        cloud_only_calls: obs.len(),
        cascade_tokens: escalated.iter().map(|o| o.cloud_tokens).sum(),
        cloud_only_tokens: obs.iter().map(|o| o.cloud_tokens).sum(),
        pgr: if gap.abs() < 1e-12 { 1.0 } else { (cascade_accuracy - local_accuracy) / gap },
        local_latency: percentiles(local_rows.iter().map(|o| o.local_ms).collect()),
        escalated_latency: percentiles(escalated.iter().map(|o| o.local_ms + o.cloud_ms).collect()),
    }
}

/// The cascade at thresholds 0, 0.05, …, 1.
pub fn sweep(obs: &[Observation]) -> Vec<Summary> {
    (0..=20).map(|i| summarize(obs, i as f32 / 20.0)).collect()
}

/// What `calibrate` aims for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum Target {
    /// Cascade accuracy at least this fraction of cloud-only accuracy (0.99 = 99 %).
    AccuracyOfCloud(f64),
    /// At most this share of requests escalated (0.2 = 20 %).
    MaxEscalation(f64),
    /// Like [`AccuracyOfCloud`](Target::AccuracyOfCloud), but the target must
    /// hold at the `quantile` of a paired bootstrap over the rows (1,000
    /// resamples, fixed seed): with `quantile` 0.1, in 90% of resamples. On a
    /// check set of a few hundred rows the plain rule picks a threshold that
    /// often misses on new traffic (measured in `models/LOOP.md`: down to 97%
    /// of the large model's accuracy for a 99% target); this one keeps a
    /// margin that shrinks as the set grows. Costs O(rows² × 1,000): meant
    /// for check sets of hundreds to a few thousand rows.
    ///
    /// [`calibrate`] keeps the lowest threshold that passes. Testing in a
    /// fixed sequence from the top down instead, and stopping at the first
    /// failure, was measured and refused: near the top only a few rows are
    /// local and the 1% margin is worth about two of 200, so one confident
    /// mistake fails the test there and the loop stalled at its seed model
    /// (`models/LOOP.md`).
    AccuracyOfCloudLowerBound {
        /// The fraction of cloud-only accuracy (0.99 = 99 %).
        fraction: f64,
        /// The bootstrap quantile that must meet it, in (0, 0.5].
        quantile: f64,
    },
}

/// Resamples in [`Target::AccuracyOfCloudLowerBound`].
const BOOTSTRAP_RESAMPLES: usize = 1000;

/// The per-threshold test of a [`Target`] over a fixed set of observations.
struct Test<'a> {
    obs: &'a [Observation],
    target: Target,
    /// The bootstrap index sets, drawn once so that thresholds are compared on the same resamples.
    resamples: Vec<Vec<usize>>,
}

impl<'a> Test<'a> {
    fn new(obs: &'a [Observation], target: Target) -> Self {
        let resamples = match target {
            Target::AccuracyOfCloudLowerBound { .. } => {
                let n = obs.len();
                let mut rng = fastrand::Rng::with_seed(0);
                (0..BOOTSTRAP_RESAMPLES).map(|_| (0..n).map(|_| rng.usize(..n)).collect()).collect()
            }
            _ => Vec::new(),
        };
        Test { obs, target, resamples }
    }

    /// Whether the cascade at `threshold` meets the target.
    fn holds(&self, threshold: f32) -> bool {
        let obs = self.obs;
        match self.target {
            Target::AccuracyOfCloud(fraction) => {
                let s = summarize(obs, threshold);
                s.cascade_accuracy + 1e-12 >= fraction * s.cloud_accuracy
            }
            Target::MaxEscalation(share) => 1.0 - summarize(obs, threshold).local_share <= share + 1e-12,
            Target::AccuracyOfCloudLowerBound { fraction, quantile } => {
                if obs.is_empty() {
                    return false;
                }
                let margin: Vec<f64> = obs
                    .iter()
                    .map(|o| {
                        let cloud_ok = f64::from(o.cloud_label.as_deref() == Some(&*o.truth));
                        f64::from(o.cascade_label(threshold) == Some(&*o.truth)) - fraction * cloud_ok
                    })
                    .collect();
                let n = obs.len() as f64;
                let mut means: Vec<f64> =
                    self.resamples.iter().map(|idx| idx.iter().map(|&i| margin[i]).sum::<f64>() / n).collect();
                means.sort_by(f64::total_cmp);
                let at = ((BOOTSTRAP_RESAMPLES - 1) as f64 * quantile.clamp(0.0, 1.0)).floor() as usize;
                means[at] >= -1e-12
            }
        }
    }
}

/// Whether the cascade at `threshold` meets `target` on `obs`: the test
/// [`calibrate`] applies to each threshold, for a gate to check a threshold
/// that was set elsewhere.
pub fn meets(obs: &[Observation], target: Target, threshold: f32) -> bool {
    Test::new(obs, target).holds(threshold)
}

/// The threshold that meets `target` while keeping the most requests local:
/// the lowest threshold for an accuracy target, the highest for an escalation
/// cap. `None` when no threshold meets it.
pub fn calibrate(obs: &[Observation], target: Target) -> Option<Summary> {
    // Candidate thresholds: every distinct local confidence, plus the ends.
    let mut candidates: Vec<f32> = obs.iter().map(Observation::local_confidence).chain([0.0, 1.0]).collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let test = Test::new(obs, target);
    let chosen = match target {
        Target::AccuracyOfCloud(_) | Target::AccuracyOfCloudLowerBound { .. } => {
            candidates.iter().copied().find(|&t| test.holds(t))
        }
        Target::MaxEscalation(_) => candidates.iter().rev().copied().find(|&t| test.holds(t)),
    };
    chosen.map(|t| summarize(obs, t))
}

/// The local model on its own: what [`local_report`] measures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LocalReport {
    /// Rows evaluated.
    pub rows: usize,
    /// Share of rows labelled correctly (a declined or failed row counts as wrong).
    pub accuracy: f64,
    /// Expected calibration error over [`CALIBRATION_BINS`] equal-width
    /// confidence bins: the row-weighted mean gap between confidence and
    /// accuracy, over the rows the model answered. 0 is perfectly calibrated;
    /// a large value means thresholds will not keep what they promise.
    pub ece: f64,
    /// At thresholds 0, 0.05, …, 1: what the router would keep local.
    pub sweep: Vec<Kept>,
}

/// What a threshold keeps local.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Kept {
    /// The threshold.
    pub threshold: f32,
    /// Share of all rows kept local (the router's own decision).
    pub share: f64,
    /// Accuracy on the kept rows; `None` when none are kept.
    pub accuracy: Option<f64>,
}

/// How many equal-width confidence bins [`LocalReport::ece`] uses (the usual 10).
pub const CALIBRATION_BINS: usize = 10;

/// The local model's accuracy, calibration and threshold sweep on `obs`; no cloud needed.
pub fn local_report(obs: &[Observation]) -> LocalReport {
    let correct = |o: &Observation| o.local_label.as_deref() == Some(o.truth.as_str());
    let n = obs.len().max(1) as f64;
    // Per bin: rows, summed confidence, correct rows.
    let mut bins = [(0usize, 0f64, 0usize); CALIBRATION_BINS];

    let answered: Vec<&Observation> = obs.iter().filter(|o| matches!(o.local, LocalOutcome::Answered { .. })).collect();
    for o in &answered {
        let confidence = f64::from(o.local_confidence()).clamp(0.0, 1.0);
        let bin = &mut bins[((confidence * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1)];
        bin.0 += 1;
        bin.1 += confidence;
        bin.2 += usize::from(correct(o));
    }
    // Σ (rows_b / N) · |accuracy_b − confidence_b| = Σ |hits_b − Σconfidence_b| / N.
    let ece = bins.iter().map(|&(_, confidence, hits)| (hits as f64 - confidence).abs()).sum::<f64>()
        / answered.len().max(1) as f64;
    let sweep = (0..=20)
        .map(|i| {
            let threshold = i as f32 / 20.0;
            let kept: Vec<&Observation> = obs.iter().filter(|o| o.local_at(threshold)).collect();
            let hits = kept.iter().filter(|o| correct(o)).count();
            Kept {
                threshold,
                share: kept.len() as f64 / n,
                accuracy: (!kept.is_empty()).then(|| hits as f64 / kept.len() as f64),
            }
        })
        .collect();
    LocalReport { rows: obs.len(), accuracy: obs.iter().filter(|o| correct(o)).count() as f64 / n, ece, sweep }
}

/// An SVG plot of cascade accuracy against the share served locally.
pub fn svg(curve: &[Summary], title: &str) -> String {
    let (w, h, pad) = (640.0, 420.0, 56.0);
    let accs: Vec<f64> = curve.iter().flat_map(|s| [s.cascade_accuracy, s.local_accuracy, s.cloud_accuracy]).collect();
    let lo = (accs.iter().copied().fold(1.0, f64::min) - 0.02).max(0.0);
    let hi = (accs.iter().copied().fold(0.0, f64::max) + 0.01).min(1.0);
    let x = |share: f64| pad + share * (w - 2.0 * pad);
    let y = |acc: f64| h - pad - (acc - lo) / (hi - lo).max(1e-9) * (h - 2.0 * pad);
    let mut points: Vec<(f64, f64, f32)> =
        curve.iter().map(|s| (s.local_share, s.cascade_accuracy, s.threshold)).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path: Vec<String> = points.iter().map(|(s, a, _)| format!("{:.1},{:.1}", x(*s), y(*a))).collect();
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">share of requests served locally</text>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">accuracy</text>
"##,
        w / 2.0,
        w / 2.0,
        h - 14.0,
        h / 2.0,
        h / 2.0,
        b = h - pad,
        r = w - pad,
    );
    for i in 0..=4 {
        let share = i as f64 / 4.0;
        let acc = lo + (hi - lo) * i as f64 / 4.0;
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}%</text>\n",
            x(share),
            h - pad + 16.0,
            share * 100.0
        );
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}%</text>\n",
            pad - 6.0,
            y(acc) + 4.0,
            acc * 100.0
        );
    }
    if let Some(first) = curve.first() {
        for (acc, label, color) in
            [(first.cloud_accuracy, "cloud only", "#c0392b"), (first.local_accuracy, "local only", "#2980b9")]
        {
            out += &format!(
                "<line x1=\"{pad}\" y1=\"{yy:.1}\" x2=\"{r}\" y2=\"{yy:.1}\" stroke=\"{color}\" stroke-dasharray=\"5,4\"/>\n<text x=\"{r}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{color}\">{label}</text>\n",
                y(acc) - 4.0,
                yy = y(acc),
                r = w - pad
            );
        }
    }
    out += &format!("<polyline fill=\"none\" stroke=\"#27ae60\" stroke-width=\"2\" points=\"{}\"/>\n", path.join(" "));
    for (s, a, t) in &points {
        out += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#27ae60\"><title>threshold {t:.2}</title></circle>\n",
            x(*s),
            y(*a)
        );
    }
    out + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(truth: &str, local: Option<&str>, conf: f32, cloud: Option<&str>) -> Observation {
        Observation {
            truth: truth.into(),
            local: match local {
                Some(_) => LocalOutcome::Answered { confidence: conf },
                None => LocalOutcome::Failed,
            },
            local_label: local.map(str::to_string),
            local_ms: 1.0,
            cloud_label: cloud.map(str::to_string),
            cloud_ms: 10.0,
            cloud_tokens: 5,
        }
    }

    #[test]
    fn map_in_order_keeps_the_order_at_any_concurrency_and_passes_panics_on() {
        let items: Vec<u64> = (0..200).collect();
        let slow_square = |&n: &u64| {
            std::thread::sleep(std::time::Duration::from_micros((n * 7919) % 500));
            n * n
        };
        let expected: Vec<u64> = items.iter().map(|n| n * n).collect();
        for threads in [0, 1, 3, 8, 500] {
            assert_eq!(map_in_order(&items, threads, slow_square), expected, "{threads} threads");
        }
        assert!(map_in_order(&[] as &[u64], 4, slow_square).is_empty());
        let panicked = std::panic::catch_unwind(|| {
            map_in_order(&items, 4, |&n| {
                assert_ne!(n, 150, "row 150");
                n
            })
        });
        assert!(panicked.is_err());
    }

    #[test]
    fn local_report_measures_calibration_and_what_each_threshold_keeps() {
        // 20 answers at 0.85 confidence, 17 right: calibrated. One failure.
        let mut calibrated: Vec<Observation> =
            (0..20).map(|i| obs("a", Some(if i < 17 { "a" } else { "b" }), 0.85, None)).collect();
        calibrated.push(obs("a", None, 0.0, None));
        let r = local_report(&calibrated);
        assert!(r.ece < 1e-6, "{r:?}");
        assert!((r.accuracy - 17.0 / 21.0).abs() < 1e-9);
        let at = |t: f32| r.sweep.iter().find(|k| (k.threshold - t).abs() < 1e-6).copied().unwrap();
        // Below 0.85 every answer stays, the failure escalates; above, nothing stays.
        assert!((at(0.8).share - 20.0 / 21.0).abs() < 1e-9 && (at(0.8).accuracy.unwrap() - 0.85).abs() < 1e-9);
        assert_eq!((at(0.9).share, at(0.9).accuracy), (0.0, None));

        // Overconfident: 0.95 and always wrong; the gap is the ECE.
        let overconfident = vec![obs("a", Some("b"), 0.95, None); 4];
        assert!((local_report(&overconfident).ece - 0.95).abs() < 1e-6);
        // No rows: zeros, not NaN.
        let empty = local_report(&[]);
        assert_eq!((empty.accuracy, empty.ece), (0.0, 0.0));
    }

    fn sample() -> Vec<Observation> {
        vec![
            obs("a", Some("a"), 0.9, Some("a")),
            obs("b", Some("a"), 0.4, Some("b")),
            obs("c", None, 0.0, Some("c")),
            obs("a", Some("a"), 0.7, Some("b")),
        ]
    }

    #[test]
    fn summary_counts_the_cascade_like_the_router() {
        let s = summarize(&sample(), 0.5);
        assert_eq!((s.local_accuracy, s.cloud_accuracy, s.cascade_accuracy), (0.5, 0.75, 1.0));
        assert_eq!((s.local_share, s.cloud_calls, s.cascade_tokens), (0.5, 2, 10));
        assert!((s.pgr - 2.0).abs() < 1e-9);
    }

    #[test]
    fn calibrate_meets_targets_with_the_most_local_traffic() {
        // Cloud-only gets 3 of 4; threshold 0 keeps 3 rows local and also gets 3 of 4.
        let s = calibrate(&sample(), Target::AccuracyOfCloud(1.0)).unwrap();
        assert!(s.cascade_accuracy >= s.cloud_accuracy);
        assert_eq!(s.local_share, 0.75);
        // Beating cloud-only needs row 2 escalated and row 4 kept: a threshold in (0.4, 0.7].
        let s = calibrate(&sample(), Target::AccuracyOfCloud(4.0 / 3.0)).unwrap();
        assert_eq!((s.threshold, s.cascade_accuracy, s.local_share), (0.7, 1.0, 0.5));
        let s = calibrate(&sample(), Target::MaxEscalation(0.25)).unwrap();
        assert!(1.0 - s.local_share <= 0.25);
    }

    #[test]
    fn the_bootstrap_bound_keeps_a_margin_that_the_point_estimate_does_not() {
        // 100 rows: the cloud is always right; the local model is right on 97 of the 100,
        // its mistakes spread over the confidences. At 97% of cloud the plain rule keeps all local.
        let obs: Vec<Observation> = (0..100)
            .map(|i| {
                let conf = 0.5 + i as f32 / 200.0;
                obs("a", Some(if i % 33 == 5 { "b" } else { "a" }), conf, Some("a"))
            })
            .collect();
        let plain = calibrate(&obs, Target::AccuracyOfCloud(0.97)).unwrap();
        assert_eq!(plain.local_share, 1.0);
        let bound = calibrate(&obs, Target::AccuracyOfCloudLowerBound { fraction: 0.97, quantile: 0.1 }).unwrap();
        assert!(bound.threshold > plain.threshold && bound.local_share < 1.0, "{bound:?}");
        assert!(bound.cascade_accuracy >= 0.97);
        // Deterministic: the same rows give the same threshold.
        let again = calibrate(&obs, Target::AccuracyOfCloudLowerBound { fraction: 0.97, quantile: 0.1 }).unwrap();
        assert_eq!(again.threshold, bound.threshold);
    }

    #[test]
    fn meets_applies_the_test_that_calibrate_applies() {
        let target = Target::AccuracyOfCloudLowerBound { fraction: 0.97, quantile: 0.1 };
        let obs: Vec<Observation> = (0..100)
            .map(|i| obs("a", Some(if (40..46).contains(&i) { "b" } else { "a" }), 0.5 + i as f32 / 200.0, Some("a")))
            .collect();
        // A block of six local mistakes (rows 40..46) among 100 rows the cloud gets right. One
        // mistake fits the 3% margin in 90% of resamples (two or fewer in ~92% of them); two do not.
        let chosen = calibrate(&obs, target).unwrap();
        assert_eq!(chosen.threshold, 0.5 + 45.0 / 200.0, "{chosen:?}");
        assert!(meets(&obs, target, chosen.threshold));
        assert!(!meets(&obs, target, 0.5 + 44.0 / 200.0));
        assert!(meets(&obs, target, 1.0), "escalating everything meets any fraction below 1");
        assert!(!meets(&[], target, 0.5), "no rows prove nothing");
    }

    #[test]
    fn rows_parse_text_and_json_inputs() {
        let r = Row::from_json_line(r#"{"text": "hi", "label": "x"}"#).unwrap();
        assert_eq!((r.input.as_text(), r.label.as_str()), (Some("hi"), "x"));
        let r = Row::from_json_line(r#"{"pixels": [1, 2], "label": 3}"#).unwrap();
        assert_eq!((r.input.as_text(), r.label.as_str()), (Some(r#"{"pixels":[1,2]}"#), "3"));
        assert!(matches!(Row::from_json_line(r#"{"text": "no label"}"#), Err(RowError::NoLabel)));
        assert!(matches!(Row::from_json_line("{"), Err(RowError::NotJson(_))));
    }

    #[test]
    fn the_plot_is_an_svg_with_one_point_per_threshold() {
        let curve = sweep(&sample());
        let svg = svg(&curve, "test");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), curve.len());
    }
}
