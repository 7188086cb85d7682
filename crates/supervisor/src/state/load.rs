//! The load an autoscaled agent carried lately: samples of its requests in
//! flight and queued, kept for the longest window the autoscaler looks at.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The load samples of an autoscaled agent, and when it last changed size.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub(super) samples: VecDeque<(Instant, f64)>,
    pub(super) last_change: Option<Instant>,
}

impl Load {
    pub(super) fn push(&mut self, at: Instant, concurrency: f64, keep: Duration) {
        self.samples.push_back((at, concurrency));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > keep)
        {
            self.samples.pop_front();
        }
    }

    /// The mean over the last `window`, if the samples cover it.
    pub(super) fn mean(&self, now: Instant, window: Duration) -> Option<f64> {
        let first = self.samples.front()?.0;
        let covered = now.saturating_duration_since(first) + Duration::from_millis(1);
        let xs: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= window)
            .map(|(_, c)| *c)
            .collect();
        if xs.is_empty() {
            return None;
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        (covered >= window).then_some(mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_need_covered_windows() {
        let t0 = Instant::now();
        let mut l = Load::default();
        l.push(t0, 4.0, Duration::from_secs(10));
        assert_eq!(l.mean(t0, Duration::from_secs(10)), None, "not covered yet");
        for i in 1..=20 {
            l.push(
                t0 + Duration::from_millis(250 * i),
                2.0,
                Duration::from_secs(10),
            );
        }
        let now = t0 + Duration::from_secs(5);
        let m = l.mean(now, Duration::from_secs(2)).unwrap();
        assert!((m - 2.0).abs() < 1e-9);
        assert!(l.mean(now, Duration::from_secs(10)).is_none());
    }
}
