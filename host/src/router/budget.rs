//! A per-plugin budget of cloud calls per minute and per day.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits on cloud calls. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Calls allowed in any one fixed minute window.
    pub per_minute: Option<u32>,
    /// Calls allowed in any one fixed day window.
    pub per_day: Option<u32>,
}

/// Fixed-window counters; windows start at the first call after the previous one ends.
pub struct Budget {
    limits: BudgetLimits,
    state: Mutex<Windows>,
}

struct Windows {
    minute: Window,
    day: Window,
}

struct Window {
    started: Instant,
    used: u32,
}

impl Window {
    fn roll(&mut self, length: Duration, now: Instant) {
        if now.duration_since(self.started) >= length {
            self.started = now;
            self.used = 0;
        }
    }
}

/// What is left of each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    /// Calls left this minute, if limited.
    pub minute: Option<u32>,
    /// Calls left today, if limited.
    pub day: Option<u32>,
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

impl Budget {
    /// A fresh budget.
    pub fn new(limits: BudgetLimits) -> Budget {
        let now = Instant::now();
        Budget {
            limits,
            state: Mutex::new(Windows {
                minute: Window { started: now, used: 0 },
                day: Window { started: now, used: 0 },
            }),
        }
    }

    /// Takes one call from both windows, or says which window is exhausted.
    pub fn try_take(&self) -> Result<(), &'static str> {
        let now = Instant::now();
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.minute.roll(MINUTE, now);
        w.day.roll(DAY, now);
        if self.limits.per_minute.is_some_and(|l| w.minute.used >= l) {
            return Err("per-minute");
        }
        if self.limits.per_day.is_some_and(|l| w.day.used >= l) {
            return Err("per-day");
        }
        w.minute.used += 1;
        w.day.used += 1;
        Ok(())
    }

    /// What is left now.
    pub fn remaining(&self) -> Remaining {
        let now = Instant::now();
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.minute.roll(MINUTE, now);
        w.day.roll(DAY, now);
        Remaining {
            minute: self.limits.per_minute.map(|l| l.saturating_sub(w.minute.used)),
            day: self.limits.per_day.map(|l| l.saturating_sub(w.day.used)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_window_runs_out_first() {
        let b = Budget::new(BudgetLimits { per_minute: Some(2), per_day: Some(10) });
        assert!(b.try_take().is_ok() && b.try_take().is_ok());
        assert_eq!(b.try_take(), Err("per-minute"));
        assert_eq!(b.remaining(), Remaining { minute: Some(0), day: Some(8) });
    }

    #[test]
    fn unlimited_never_runs_out() {
        let b = Budget::new(BudgetLimits::default());
        assert!((0..1000).all(|_| b.try_take().is_ok()));
    }
}
