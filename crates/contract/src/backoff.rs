//! The capped, jittered exponential backoff PAR uses wherever it tries again:
//! restarts of a crashed worker, downloads of a package.

use std::time::Duration;

/// `initial * multiplier^n`, capped at `max`, then spread by ±`jitter` (a
/// fraction) and capped again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
    pub jitter: f64,
}

impl Backoff {
    /// The delay before try number `attempt` (0 = the first retry), with
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(initial: f64, mult: f64, max: f64) -> Backoff {
        Backoff {
            initial: Duration::from_secs_f64(initial),
            multiplier: mult,
            max: Duration::from_secs_f64(max),
            jitter: 0.2,
        }
    }

    #[test]
    fn grows_and_caps() {
        let b = b(0.2, 2.0, 30.0);
        assert_eq!(b.delay(0, 0.5), Duration::from_secs_f64(0.2));
        assert_eq!(b.delay(1, 0.5), Duration::from_secs_f64(0.4));
        assert_eq!(b.delay(20, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.99), Duration::from_secs(30));
    }

    /// Bounded, monotonic without jitter, and within ±20 % with it, over a
    /// grid of inputs that covers the edges (zero, equal bounds, huge attempts).
    #[test]
    fn bounded_and_monotonic() {
        for initial in [0.0, 0.001, 0.2, 1.0, 7.5, 99.0] {
            for mult in [1.0, 1.5, 2.0, 10.0, 99.0] {
                for max in [0.0f64, 0.5, 30.0, 999.0] {
                    let b = b(initial, mult, max.max(initial));
                    for attempt in [0, 1, 2, 5, 17, 100, 4999] {
                        for unit in [0.0, 0.25, 0.5, 0.999] {
                            let d = b.delay(attempt, unit).as_secs_f64();
                            let cap = b.max.as_secs_f64();
                            assert!(d <= cap + 1e-9);
                            assert!(b.delay(attempt + 1, 0.5) >= b.delay(attempt, 0.5));
                            let mid = b.delay(attempt, 0.5).as_secs_f64();
                            assert!(d >= mid * 0.8 - 1e-9 && d <= (mid * 1.2).min(cap) + 1e-9);
                        }
                    }
                }
            }
        }
    }
}
