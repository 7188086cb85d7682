//! Restart policies and the capped, jittered exponential backoff between restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a worker that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after any exit.
    Always,
    /// Restart after a non-zero exit or a signal (the default).
    #[default]
    #[serde(alias = "on_failure")]
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Whether an exit (`success` = exit code 0) is followed by a restart.
    pub fn restarts_after(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// Exponential backoff: `initial * multiplier^n`, capped at `max`, then
/// spread by ±`jitter` (a fraction) and capped again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
    pub jitter: f64,
}

impl Backoff {
    /// The delay before restart number `attempt` (0 = first restart), with
    /// `unit` a uniform random number in [0, 1) supplying the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.initial.as_secs_f64();
        let max = self.max.as_secs_f64();
        let mult = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let raw = base * mult.powi(attempt.min(1024) as i32);
        let capped = if raw.is_finite() { raw.min(max) } else { max };
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * factor).clamp(0.0, max.max(0.0)))
    }

    /// [`Backoff::delay`] with a random jitter.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(initial: f64, mult: f64, max: f64) -> Backoff {
        Backoff {
            initial: Duration::from_secs_f64(initial),
            multiplier: mult,
            max: Duration::from_secs_f64(max),
            jitter: 0.2,
        }
    }

    #[test]
    fn defaults_grow_and_cap() {
        let b = b(0.2, 2.0, 30.0);
        assert_eq!(b.delay(0, 0.5), Duration::from_secs_f64(0.2));
        assert_eq!(b.delay(1, 0.5), Duration::from_secs_f64(0.4));
        assert_eq!(b.delay(20, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.99), Duration::from_secs(30));
    }

    #[test]
    fn policies() {
        assert!(RestartPolicy::Always.restarts_after(true));
        assert!(!RestartPolicy::OnFailure.restarts_after(true));
        assert!(RestartPolicy::OnFailure.restarts_after(false));
        assert!(!RestartPolicy::Never.restarts_after(false));
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_monotonic_without_jitter(
            initial in 0.0f64..100.0, mult in 1.0f64..100.0, max in 0.0f64..1000.0,
            attempt in 0u32..5000, unit in 0.0f64..1.0,
        ) {
            let b = b(initial, mult, max.max(initial));
            let d = b.delay(attempt, unit).as_secs_f64();
            prop_assert!(d <= b.max.as_secs_f64() + 1e-9);
            prop_assert!(d >= b.delay(attempt, 0.0).as_secs_f64() - 1e-9);
            // Without jitter (unit 0.5) the delay never shrinks with attempts.
            prop_assert!(b.delay(attempt + 1, 0.5) >= b.delay(attempt, 0.5));
            // Jitter stays within ±20 % of the capped value.
            let mid = b.delay(attempt, 0.5).as_secs_f64();
            prop_assert!(d >= mid * 0.8 - 1e-9 && d <= (mid * 1.2).min(b.max.as_secs_f64()) + 1e-9);
        }
    }
}
