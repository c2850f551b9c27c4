//! The promotion gate: a candidate version replaces the live one only when it
//! is no worse on a labelled check.
//!
//! 1. [`evaluate`] answers the check set with both versions through the same
//!    cascade (the same cloud and flags, each at its own threshold unless the
//!    caller overrides it), as [`eval`](crate::eval) replays a set, and
//!    decides by a [`Rule`]:
//!    - [`Rule::NoLessAccurate`] (what `edgecascade promote` uses) compares
//!      **cascade accuracy**, what callers get; the share served locally,
//!      cloud calls and model size are reported, not gated.
//!    - [`Rule::BetterOrCheaper`] (what the distillation loop uses) also
//!      promotes a less accurate candidate that serves a larger **share
//!      locally**, what the bill follows, as long as it meets an accuracy
//!      floor, the calibration target.
//! 2. [`apply`] carries out the [`Verdict`]: on [`Verdict::Promote`] it writes
//!    the candidate's verified files into the live package directory, each
//!    atomically, and `plugin.toml` last, so a server running
//!    [`watch`](crate::serve::watch) sees the new version whole and swaps to
//!    it. On a refusal it touches nothing.
//!
//! ```no_run
//! # fn demo(runtime: &edgecascade::Runtime, live: &edgecascade::Router, candidate: &edgecascade::Router,
//! #         rows: &[edgecascade::eval::Row]) -> edgecascade::Result<()> {
//! use edgecascade::gate;
//! let package = runtime.verify("candidates/sentiment-1.1.0")?;
//! let check = gate::Check { rows, rule: gate::Rule::NoLessAccurate { tolerance: 0.0 } };
//! let report = gate::evaluate(live, candidate, check, || {})?;
//! print!("{}", report.table());
//! if gate::apply(&report, &package, std::path::Path::new("live/sentiment"))? {
//!     println!("promoted");
//! }
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::eval::{self, Observation, Row, Summary, Target};
use crate::fsutil::write_atomic;
use crate::plugin::manifest::MANIFEST_FILE;
use crate::plugin::{Manifest, VerifiedPackage};
use crate::router::Router;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One version's result on the check set.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// The plugin version.
    pub version: String,
    /// The cascade at this version's threshold.
    pub summary: Summary,
    /// The size of its models in bytes.
    pub model_bytes: u64,
}

impl Side {
    /// Cloud calls the cascade makes per 1,000 requests.
    pub fn cloud_calls_per_1000(&self) -> f64 {
        self.summary.cloud_calls as f64 * 1000.0 / self.summary.rows.max(1) as f64
    }
}

/// How the gate compares the two versions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// Promote when the candidate's cascade accuracy is at least the live
    /// one's minus `tolerance` (a fraction; a negative tolerance demands an
    /// improvement of that much). For a new version whose job is to answer
    /// better.
    NoLessAccurate {
        /// The cascade accuracy the candidate may lose, as a fraction (0.003 = 0.3 points).
        tolerance: f64,
    },
    /// Promote when the candidate is no less accurate (as
    /// [`NoLessAccurate`](Rule::NoLessAccurate) with tolerance 0), or when
    /// it serves a larger share locally while its cascade still meets
    /// `target` at its own threshold (the same test as
    /// [`eval::calibrate`], see [`eval::meets`]). For the distillation loop,
    /// whose objective is fewer cloud calls at an accuracy floor: comparing
    /// accuracies alone refused a candidate that served 7 times more locally,
    /// by one check row of 200; comparing shares alone stalled the loop in
    /// two of four re-drawn data sets, because the share at a calibrated
    /// threshold is itself noisy (`models/LOOP.md`).
    BetterOrCheaper {
        /// The accuracy floor, normally the loop's calibration target.
        target: Target,
    },
}

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    /// The candidate is no worse: it may replace the live version.
    Promote,
    /// The candidate's cascade accuracy is below the live version's by more than the tolerance.
    Refuse {
        /// How far below, as a fraction (0.003 = 0.3 points).
        shortfall: f64,
    },
    /// [`Rule::BetterOrCheaper`]: the candidate would serve more locally,
    /// but its cascade misses the accuracy floor at its threshold.
    MissesTarget {
        /// The candidate's cascade accuracy on the check set.
        cascade_accuracy: f64,
        /// Cloud-only accuracy on the check set.
        cloud_accuracy: f64,
    },
}

impl Verdict {
    /// A one-line reason, for logs and tables.
    pub fn describe(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        match *self {
            Verdict::Promote => "promote".into(),
            Verdict::Refuse { shortfall } => format!("refused: {:.1} points less accurate", shortfall * 100.0),
            Verdict::MissesTarget { cascade_accuracy, cloud_accuracy } => format!(
                "refused: cascade accuracy {} misses the target (cloud-only {})",
                pct(cascade_accuracy),
                pct(cloud_accuracy)
            ),
        }
    }
}

/// Both versions on the check set, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin.
    pub plugin: String,
    /// The version serving now.
    pub live: Side,
    /// The version that would replace it.
    pub candidate: Side,
    /// How the two were compared.
    pub rule: Rule,
    /// The decision.
    pub verdict: Verdict,
}

impl Report {
    /// Whether the candidate may replace the live version.
    pub fn promotes(&self) -> bool {
        self.verdict == Verdict::Promote
    }

    /// The before/after table, one line per version, then cloud-only accuracy and the thresholds.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let mut out = format!(
            "{:<24} {:>16} {:>10} {:>14} {:>21} {:>12}\n",
            "version", "cascade accuracy", "local-only", "served locally", "cloud calls per 1,000", "model bytes"
        );
        for (side, role) in [(&self.live, "live"), (&self.candidate, "candidate")] {
            let s = &side.summary;
            out += &format!(
                "{:<24} {:>16} {:>10} {:>14} {:>21.0} {:>12}\n",
                format!("{} ({role})", side.version),
                pct(s.cascade_accuracy),
                pct(s.local_accuracy),
                pct(s.local_share),
                side.cloud_calls_per_1000(),
                thousands(side.model_bytes)
            );
        }
        out + &format!(
            "{} rows; cloud-only accuracy {}; thresholds {:.2} (live), {:.2} (candidate)\n",
            self.live.summary.rows,
            pct(self.live.summary.cloud_accuracy),
            self.live.summary.threshold,
            self.candidate.summary.threshold
        )
    }
}

/// `1234567` -> `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The verdict of [`Rule::NoLessAccurate`]: promote when the candidate's
/// cascade accuracy is at least the live one's minus `tolerance`.
pub fn decide(live: &Summary, candidate: &Summary, tolerance: f64) -> Verdict {
    let shortfall = live.cascade_accuracy - candidate.cascade_accuracy;
    // Both are fractions of the same rows: the epsilon only absorbs rounding.
    if shortfall <= tolerance + 1e-12 { Verdict::Promote } else { Verdict::Refuse { shortfall } }
}

/// The verdict of `rule` on both versions' observations of the same rows,
/// each at its own threshold.
pub fn judge(
    rule: Rule,
    (live, live_threshold): (&[Observation], f32),
    (candidate, candidate_threshold): (&[Observation], f32),
) -> Verdict {
    let (l, c) = (eval::summarize(live, live_threshold), eval::summarize(candidate, candidate_threshold));
    match rule {
        Rule::NoLessAccurate { tolerance } => decide(&l, &c, tolerance),
        Rule::BetterOrCheaper { target } => match decide(&l, &c, 0.0) {
            Verdict::Promote => Verdict::Promote,
            less_accurate if c.local_share <= l.local_share + 1e-12 => less_accurate,
            _ if eval::meets(candidate, target, candidate_threshold) => Verdict::Promote,
            _ => Verdict::MissesTarget { cascade_accuracy: c.cascade_accuracy, cloud_accuracy: c.cloud_accuracy },
        },
    }
}

/// Checks that `candidate` can stand in for `live`: the same plugin name, another version.
pub fn check_pair(live: &Manifest, candidate: &Manifest) -> Result<()> {
    let (l, c) = (&live.plugin, &candidate.plugin);
    let refuse = |reason: &str| {
        Err(Error::NotACandidate {
            live: format!("{} {}", l.name, l.version),
            candidate: format!("{} {}", c.name, c.version),
            reason: reason.to_string(),
        })
    };
    if l.name != c.name {
        return refuse("it is another plugin");
    }
    if l.version == c.version {
        // Versions are what replies, logs and the reload report name: a swap must change it.
        return refuse("it has the same version; bump plugin.version");
    }
    Ok(())
}

/// What [`evaluate`] checks a candidate on.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// Labelled rows that both versions answer. Neither model may have been
    /// trained on them, or the gate measures memory. No default.
    pub rows: &'a [Row],
    /// How the gate decides. No default: the loop uses [`Rule::BetterOrCheaper`],
    /// `edgecascade promote` [`Rule::NoLessAccurate`].
    pub rule: Rule,
}

/// Answers the check's rows with both routers and decides by its rule. The
/// routers should share one cloud client and settings, with their answer
/// caches off (as [`eval::observe`] wants), so the only difference is the
/// plugin version. `progress` is called once per row per version. Fails with
/// [`Error::NotACandidate`] when the two are not versions of one plugin.
pub fn evaluate(live: &Router, candidate: &Router, check: Check<'_>, progress: impl Fn() + Sync) -> Result<Report> {
    let Check { rows, rule } = check;
    check_pair(live.plugin().manifest(), candidate.plugin().manifest())?;
    // One call at a time: the gate's teacher bill is part of what the loop reports.
    let observe = |router: &Router| (eval::observe(router, rows, 1, &progress), router.config().threshold);
    let (live_obs, candidate_obs) = (observe(live), observe(candidate));
    let verdict = judge(rule, (&live_obs.0, live_obs.1), (&candidate_obs.0, candidate_obs.1));
    let side = |router: &Router, (obs, threshold): &(Vec<Observation>, f32)| Side {
        version: router.plugin().version().to_string(),
        summary: eval::summarize(obs, *threshold),
        model_bytes: router.plugin().model_bytes(),
    };
    Ok(Report {
        plugin: live.plugin().name().to_string(),
        live: side(live, &live_obs),
        candidate: side(candidate, &candidate_obs),
        rule,
        verdict,
    })
}

/// Carries out `report`'s verdict. On [`Verdict::Promote`] writes
/// `candidate` (the package the report evaluated) into `live_dir` and
/// returns true; on a refusal touches nothing and returns false.
///
/// The files written are the bytes verified when `candidate` was read, each
/// through a temporary file and a rename, and `plugin.toml` goes last: until
/// then the live manifest names the old hashes, so a watcher never loads a
/// mix. If a write fails, the files already replaced are put back. Files the
/// new manifest no longer names are left in place.
///
/// Fails with [`Error::NotACandidate`] when `candidate` or the package in
/// `live_dir` is not the version the report compared (another promotion got
/// there first, say).
pub fn apply(report: &Report, candidate: &VerifiedPackage, live_dir: &Path) -> Result<bool> {
    if !report.promotes() {
        return Ok(false);
    }
    let live = Manifest::read(live_dir)?;
    check_pair(&live, candidate.manifest())?;
    let (live_info, candidate_info) = (&live.plugin, &candidate.manifest().plugin);
    if live_info.version != report.live.version || candidate_info.version != report.candidate.version {
        return Err(Error::NotACandidate {
            live: format!("{} {}", live_info.name, live_info.version),
            candidate: format!("{} {}", candidate_info.name, candidate_info.version),
            reason: format!(
                "the gate compared {} {} with {}",
                report.plugin, report.live.version, report.candidate.version
            ),
        });
    }
    // Artifacts first: once the new manifest lands, the old ones could only be refused.
    crate::engine::aot::replace_artifacts(candidate, live_dir)?;
    install(candidate, live_dir)?;
    Ok(true)
}

/// Writes the package's files into `dir`, the manifest last; undoes the writes on failure.
pub(crate) fn install(package: &VerifiedPackage, dir: &Path) -> Result<()> {
    // The manifest as verified, byte for byte: its signature covers these bytes.
    let files = package.contents()?.chain(std::iter::once((MANIFEST_FILE, package.manifest_bytes())));
    // What each replaced file held before (None: it did not exist), to undo a half-done install.
    let mut replaced: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    for (file, bytes) in files {
        let path = dir.join(file);
        let before = std::fs::read(&path).ok();
        if before.as_deref() == Some(bytes) {
            continue;
        }
        let written = match path.parent() {
            Some(parent) => std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e)),
            None => Ok(()),
        }
        .and_then(|()| write_atomic(&path, bytes));
        if let Err(e) = written {
            for (path, before) in replaced.iter().rev() {
                let _ = match before {
                    Some(bytes) => write_atomic(path, bytes),
                    None => std::fs::remove_file(path).map_err(|e| Error::io(path, e)),
                };
            }
            return Err(e);
        }
        replaced.push((path, before));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(cascade_accuracy: f64) -> Summary {
        let obs = eval::Observation {
            truth: "a".into(),
            local: crate::router::LocalOutcome::Answered { confidence: 1.0 },
            local_label: Some("a".into()),
            local_ms: 1.0,
            cloud_label: Some("a".into()),
            cloud_ms: 1.0,
            cloud_tokens: 1,
        };
        Summary { cascade_accuracy, ..eval::summarize(&[obs], 0.5) }
    }

    #[test]
    fn no_worse_within_the_tolerance_promotes() {
        assert_eq!(decide(&summary(0.888), &summary(0.888), 0.0), Verdict::Promote);
        assert_eq!(decide(&summary(0.888), &summary(0.9), 0.0), Verdict::Promote);
        assert_eq!(decide(&summary(0.888), &summary(0.885), 0.005), Verdict::Promote);
        // 0.1 + 0.2 style rounding must not refuse an equal candidate.
        assert_eq!(decide(&summary(0.1 + 0.2), &summary(0.3), 0.0), Verdict::Promote);
    }

    #[test]
    fn worse_beyond_the_tolerance_refuses() {
        let Verdict::Refuse { shortfall } = decide(&summary(0.888), &summary(0.885), 0.0) else { panic!() };
        assert!((shortfall - 0.003).abs() < 1e-9);
        assert!(matches!(decide(&summary(0.888), &summary(0.888), -0.01), Verdict::Refuse { .. }));
    }

    /// Ten rows the cloud gets right; the local model is right on `right` of them, at `confidence`.
    fn rows(right: usize, confidence: f32) -> Vec<Observation> {
        (0..10)
            .map(|i| eval::Observation {
                truth: "a".into(),
                local: crate::router::LocalOutcome::Answered { confidence },
                local_label: Some(if i < right { "a" } else { "b" }.into()),
                local_ms: 1.0,
                cloud_label: Some("a".into()),
                cloud_ms: 1.0,
                cloud_tokens: 1,
            })
            .collect()
    }

    #[test]
    fn the_loop_rule_trades_accuracy_above_the_floor_for_local_traffic() {
        // Live escalates everything (threshold 1, cascade 100%); the candidate serves all
        // locally at 90%.
        let live = rows(10, 0.6);
        let candidate = rows(9, 0.9);
        let (l, c) = ((live.as_slice(), 1.0), (candidate.as_slice(), 0.5));
        let accurate = Rule::NoLessAccurate { tolerance: 0.0 };
        assert!(matches!(judge(accurate, l, c), Verdict::Refuse { .. }));
        let loop_rule = |fraction| Rule::BetterOrCheaper { target: Target::AccuracyOfCloud(fraction) };
        assert_eq!(judge(loop_rule(0.9), l, c), Verdict::Promote);
        let Verdict::MissesTarget { cascade_accuracy, cloud_accuracy } = judge(loop_rule(0.95), l, c) else { panic!() };
        assert_eq!((cascade_accuracy, cloud_accuracy), (0.9, 1.0));
        // The other way round the candidate is more accurate: promoted although it serves less.
        assert_eq!(judge(loop_rule(0.9), c, l), Verdict::Promote);
        // Less accurate at an equal share: refused with the shortfall.
        let Verdict::Refuse { shortfall } = judge(loop_rule(0.8), (&live, 0.5), (&candidate, 0.5)) else { panic!() };
        assert!((shortfall - 0.1).abs() < 1e-9);
    }

    #[test]
    fn byte_counts_get_separators() {
        assert_eq!(thousands(3_788_386), "3,788,386");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(0), "0");
    }
}
