//! Retrying download attempts: exponential, capped, jittered backoff, and only
//! for failures that may pass (connection errors, timeouts, 5xx).

use std::future::Future;
use std::time::Duration;

use crate::error::FetchError;
use crate::options::FetchOptions;

/// The outcome of one failed attempt.
pub(crate) struct AttemptError {
    pub(crate) error: FetchError,
    pub(crate) transient: bool,
}

impl AttemptError {
    pub(crate) fn transient(error: FetchError) -> Self {
        Self {
            error,
            transient: true,
        }
    }
    pub(crate) fn permanent(error: FetchError) -> Self {
        Self {
            error,
            transient: false,
        }
    }
}

/// The delay before retry number `retry` (0-based): PAR's one backoff,
/// `initial × 2^retry` capped at `max`, spread by ±50 % so that many
/// containers retrying at once spread out.
pub(crate) fn delay(initial: Duration, max: Duration, retry: u32) -> Duration {
    let backoff = par_contract::backoff::Backoff {
        initial,
        multiplier: 2.0,
        max,
        jitter: 0.5,
    };
    backoff.delay(retry, fastrand::f64())
}

/// Runs `attempt` until it succeeds, fails permanently, or `opts.retries`
/// retries are used up.
pub(crate) async fn run<T, F, Fut>(
    opts: &FetchOptions,
    location: &str,
    mut attempt: F,
) -> Result<T, FetchError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut n = 0;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) if !e.transient => return Err(e.error),
            Err(e) if n >= opts.retries => {
                if n == 0 {
                    return Err(e.error);
                }
                return Err(FetchError::RetriesExhausted {
                    location: location.to_string(),
                    attempts: n + 1,
                    last: Box::new(e.error),
                });
            }
            Err(e) => {
                let wait = delay(opts.backoff_initial, opts.backoff_max, n);
                tracing::warn!(
                    source = location,
                    attempt = n + 1,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %par_telemetry::error_chain(&e.error),
                    "package download failed, retrying"
                );
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_is_capped_and_jittered_within_bounds() {
        let init = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for retry in 0..40 {
            let full = init
                .saturating_mul(2u32.saturating_pow(retry.min(30)))
                .min(max);
            for _ in 0..50 {
                let d = delay(init, max, retry);
                assert!(
                    d <= max && d >= full / 2 && d <= full.mul_f64(1.5),
                    "retry {retry}: {d:?} vs {full:?}"
                );
            }
        }
        assert!(delay(init, max, 10) >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn retries_transient_then_stops_on_permanent() {
        let mut opts = FetchOptions::new("/nonexistent");
        opts.backoff_initial = Duration::from_millis(1);
        opts.backoff_max = Duration::from_millis(2);
        opts.retries = 5;
        let mut calls = 0;
        let r: Result<(), _> = run(&opts, "x", |n| {
            calls += 1;
            async move {
                let e = FetchError::Status {
                    location: "x".into(),
                    status: 500,
                };
                if n < 2 {
                    Err(AttemptError::transient(e))
                } else {
                    Err(AttemptError::permanent(FetchError::NotFound {
                        location: "x".into(),
                        status: 404,
                    }))
                }
            }
        })
        .await;
        assert_eq!(calls, 3);
        assert!(matches!(r, Err(FetchError::NotFound { .. })));

        opts.retries = 2;
        let mut calls = 0;
        let r: Result<(), _> = run(&opts, "x", |_| {
            calls += 1;
            async {
                Err(AttemptError::transient(FetchError::Status {
                    location: "x".into(),
                    status: 503,
                }))
            }
        })
        .await;
        assert_eq!(calls, 3);
        let err = r.unwrap_err();
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
    }
}
