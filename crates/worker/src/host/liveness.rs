//! Liveness through the agent host, like Kubernetes' liveness probe: the
//! worker pings the host over its channel every `interval`; the ping is
//! answered by the agent's event loop itself, so an agent whose loop is
//! blocked (CPU in async code, a sync sleep in a coroutine) misses it. After
//! `failures` misses in a row the agent is not live: the worker kills its host
//! and exits ([`par_contract::exit::UNRESPONSIVE`]), and the supervisor
//! restarts it as after a crash. An agent busy awaiting (I/O, `asyncio.sleep`)
//! or running sync handlers (in the host's thread pool) still answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::protocol::to_host;
use super::{HostChannel, Reply};

/// When and how patiently the host is pinged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Time between pings; `None`: no liveness check.
    pub interval: Option<Duration>,
    /// How long one ping may wait for its answer.
    pub timeout: Duration,
    /// Misses in a row that make the agent not live.
    pub failures: u32,
}

impl Default for Liveness {
    /// 10 s / 5 s / 6: an event loop blocked for about a minute. Long enough
    /// for agent code that does slow sync work in a coroutine now and then.
    fn default() -> Self {
        Liveness {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(5),
            failures: 6,
        }
    }
}

/// Pings until the agent is not live and returns why; never returns while
/// `stopping` is set (a host shutting down may stop answering) or when the
/// check is off.
pub async fn watch(chan: Arc<HostChannel>, opts: Liveness, stopping: &AtomicBool) -> String {
    let Some(interval) = opts.interval.filter(|_| opts.failures > 0) else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut missed = 0u32;
    loop {
        tick.tick().await;
        if stopping.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        let mut ping = chan.request(to_host::PING, b"", b"");
        let answered = matches!(
            tokio::time::timeout(opts.timeout, ping.next()).await,
            Ok(Some(Reply::Ok(_)))
        );
        drop(ping);
        if answered {
            if missed > 0 {
                tracing::info!(missed, "the agent's event loop answers again");
            }
            missed = 0;
            continue;
        }
        missed += 1;
        tracing::warn!(
            missed,
            of = opts.failures,
            timeout = ?opts.timeout,
            "the agent's event loop did not answer a liveness ping"
        );
        if missed >= opts.failures && !stopping.load(Ordering::SeqCst) {
            return format!(
                "the agent's event loop answered none of {missed} liveness pings in a row \
                 (each given {}; PAR_LIVENESS_*): it is blocked, e.g. by CPU-bound or \
                 blocking code in a coroutine",
                humantime::format_duration(opts.timeout)
            );
        }
    }
}
