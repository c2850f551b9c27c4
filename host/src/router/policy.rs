//! The routing decision: one function that says whether a request stays
//! local, used by the [`Router`](super::Router) for live traffic and by
//! everything that replays traffic ([`eval`](crate::eval), `calibrate`, the
//! promotion [`gate`](crate::gate), the distillation loop), so that a number
//! measured offline is the number the router would have produced.
//!
//! ```
//! use edgecascade::router::policy::{decide, LocalOutcome};
//! use edgecascade::{Mode, Reason};
//!
//! let sure = LocalOutcome::Answered { confidence: 0.93 };
//! assert_eq!(decide(sure, Mode::Auto, 0.8), Reason::Confident);
//! assert_eq!(decide(LocalOutcome::Answered { confidence: 0.6 }, Mode::Auto, 0.8), Reason::LowConfidence);
//! assert!(decide(LocalOutcome::Beyond, Mode::Auto, 0.8).escalates());
//! assert_eq!(decide(LocalOutcome::Failed, Mode::LocalOnly, 0.8), Reason::ForcedLocal);
//! ```

use super::{Mode, Reason};
use serde::Serialize;

/// What the local model made of a request, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LocalOutcome {
    /// An answer with this confidence. An answer without a label (a tensor
    /// plugin's) is an answer like any other: it stays local when confident.
    Answered {
        /// The plugin's confidence, in `[0, 1]`.
        confidence: f32,
    },
    /// The plugin said the input is beyond it.
    Beyond,
    /// The local run failed: a trap, the deadline, bad input.
    Failed,
    /// The local model was not asked ([`Mode::CloudOnly`]).
    Skipped,
}

impl LocalOutcome {
    /// The confidence of an answer; 0 for anything else.
    pub fn confidence(self) -> f32 {
        match self {
            LocalOutcome::Answered { confidence } => confidence,
            _ => 0.0,
        }
    }
}

/// Why a request goes where it goes. A request escalates exactly when the
/// returned reason [`escalates`](Reason::escalates); whether a cloud is there
/// to take it is the router's business ([`Reason::NoCloud`]).
pub fn decide(local: LocalOutcome, mode: Mode, threshold: f32) -> Reason {
    match (mode, local) {
        (Mode::CloudOnly, _) | (_, LocalOutcome::Skipped) => Reason::ForcedCloud,
        (Mode::LocalOnly, _) => Reason::ForcedLocal,
        (Mode::Auto, LocalOutcome::Answered { confidence }) if confidence >= threshold => Reason::Confident,
        (Mode::Auto, LocalOutcome::Answered { .. }) => Reason::LowConfidence,
        (Mode::Auto, LocalOutcome::Beyond) => Reason::Beyond,
        (Mode::Auto, LocalOutcome::Failed) => Reason::LocalError,
    }
}

impl Reason {
    /// Whether a request with this reason is sent to the cloud.
    pub fn escalates(self) -> bool {
        matches!(self, Reason::LowConfidence | Reason::Beyond | Reason::LocalError | Reason::ForcedCloud)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_inclusive_and_every_non_answer_escalates_in_auto() {
        let at = |c| decide(LocalOutcome::Answered { confidence: c }, Mode::Auto, 0.7);
        assert_eq!((at(0.7), at(0.69)), (Reason::Confident, Reason::LowConfidence));
        for outcome in [LocalOutcome::Beyond, LocalOutcome::Failed, LocalOutcome::Skipped] {
            assert!(decide(outcome, Mode::Auto, 0.0).escalates(), "{outcome:?}");
            assert!(!decide(outcome, Mode::LocalOnly, 0.0).escalates() || outcome == LocalOutcome::Skipped);
        }
        assert_eq!(decide(LocalOutcome::Answered { confidence: 1.0 }, Mode::CloudOnly, 0.0), Reason::ForcedCloud);
    }
}
