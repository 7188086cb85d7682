//! Admission: which worker a request goes to, or why none. The ready replica
//! with the fewest requests in flight; with `max_concurrency`, a free slot
//! first (waiting in the agent's bounded queue, first come first served); for
//! an agent scaled to zero, a wake and a wait until it is ready. Beyond the
//! queue's bound or its timeout: 503 with `Retry-After`, at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::Proxy;
use crate::http::error::ApiError;
use crate::http::route_table::{Pool, Route, Upstream};
use crate::model::{AgentId, Input, State, WorkerId};

/// A request's worker, its agent's pool, and its slot (when limited).
pub(super) struct Admitted {
    pub pool: Arc<Pool>,
    pub upstream: Arc<Upstream>,
    pub slot: Option<OwnedSemaphorePermit>,
    /// The session it belongs to (agents whose sessions are tracked).
    pub session: Option<Arc<str>>,
    /// Its session's process was gone: it starts over on this one.
    pub rebound: bool,
    /// How long it waited for the agent to wake from zero, when it did.
    pub woke: Option<std::time::Duration>,
}

impl SessionHint {
    /// The key it names itself (not one found from an interaction id).
    pub fn key(&self) -> Option<&str> {
        match self {
            SessionHint::Key(k) => Some(&**k),
            _ => None,
        }
    }
}

/// What a request says about its session (`sessions::key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionHint {
    #[default]
    None,
    /// Shared by the admission, the reply's watch and its header.
    Key(Arc<str>),
    /// An answer to something the agent asked in a session it named then.
    Interaction(Box<str>),
}

/// The worker for a request: the session's when it has one its agent
/// tracks, else the least loaded ready one.
#[inline]
fn choose(
    pool: &Pool,
    upstreams: &[Arc<Upstream>],
    draining: &[Arc<Upstream>],
    avoid: &[WorkerId],
    hint: &SessionHint,
) -> Option<(Arc<Upstream>, Option<Arc<str>>, bool)> {
    let settings = match hint {
        SessionHint::None => None,
        _ if !pool.tracks() => None,
        _ => pool.session_settings(),
    };
    let Some(settings) = settings else {
        return pick(upstreams, avoid).map(|u| (u, None, false));
    };
    let key = match hint {
        SessionHint::Key(k) => Arc::clone(k),
        SessionHint::Interaction(id) => match pool.sessions.session_of(id) {
            Some(k) => k.into(),
            None => return pick(upstreams, avoid).map(|u| (u, None, false)),
        },
        SessionHint::None => return None,
    };
    let placed = pool.sessions.place(
        &key,
        upstreams,
        draining,
        avoid,
        &settings,
        &pool.metrics.sessions,
        Instant::now(),
    )?;
    Some((placed.upstream, Some(key), placed.rebound))
}

/// A place in the agent's queue, given back when dropped.
struct Queued(Arc<Pool>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.dequeue();
    }
}

impl Proxy {
    /// Admits a request for `agent_id`, avoiding workers that failed it already.
    pub(super) async fn admit(
        &self,
        agent_id: &str,
        avoid: &[WorkerId],
        hint: &SessionHint,
    ) -> Result<Admitted, ApiError> {
        match self.admit_now(agent_id, avoid, hint) {
            Some(a) => Ok(a),
            None => self.admit_slowly(agent_id, avoid, hint).await,
        }
    }

    /// `admit`, given up when `gone` resolves first (the client left while
    /// its request waited): None then, and the request has left the queue,
    /// so no worker runs it later for nobody.
    pub(super) async fn admit_unless_gone(
        &self,
        agent_id: &str,
        avoid: &[WorkerId],
        hint: &SessionHint,
        gone: impl std::future::Future<Output = ()>,
    ) -> Option<Result<Admitted, ApiError>> {
        if let Some(a) = self.admit_now(agent_id, avoid, hint) {
            return Some(Ok(a));
        }
        tokio::select! {
            biased;
            a = self.admit_slowly(agent_id, avoid, hint) => Some(a),
            () = gone => None,
        }
    }

    /// The common case, without waiting: the agent is ready and a slot is
    /// free (or it has no limit). None: the request must wait (`admit_slowly`).
    fn admit_now(
        &self,
        agent_id: &str,
        avoid: &[WorkerId],
        hint: &SessionHint,
    ) -> Option<Admitted> {
        Self::admit_in(self.routes.get(agent_id), avoid, hint)
    }

    /// `admit_now` on the agent's route as the caller read it (the direct
    /// path reads the table once per request, for its session too).
    pub(super) fn admit_in(
        route: Option<Route>,
        avoid: &[WorkerId],
        hint: &SessionHint,
    ) -> Option<Admitted> {
        let Some(Route::Ready {
            pool,
            upstreams,
            draining,
        }) = route
        else {
            return None;
        };
        let slot = match pool.admission().max_concurrency {
            None => None,
            Some(_) => Some(Arc::clone(pool.slots()).try_acquire_owned().ok()?),
        };
        let (upstream, session, rebound) = choose(&pool, &upstreams, &draining, avoid, hint)?;
        Some(Admitted {
            pool,
            upstream,
            slot,
            session,
            rebound,
            woke: None,
        })
    }

    /// Waits for a slot, a wake or a route change, in the agent's queue;
    /// dropped (its client gone), it leaves the queue.
    async fn admit_slowly(
        &self,
        agent_id: &str,
        avoid: &[WorkerId],
        hint: &SessionHint,
    ) -> Result<Admitted, ApiError> {
        let mut rx = self.routes.subscribe();
        let mut queued: Option<(Queued, Instant)> = None;
        let mut woken_at: Option<Instant> = None;
        loop {
            let route = rx.borrow_and_update().get(agent_id).cloned();
            let pool = match &route {
                None => {
                    self.unknown.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::not_found(format!("no agent '{agent_id}'")));
                }
                Some(Route::NotReady {
                    state,
                    retry_after_secs,
                    reason,
                }) => {
                    return Err(not_ready(
                        agent_id,
                        *state,
                        *retry_after_secs,
                        reason.as_deref(),
                        woken_at,
                    ))
                }
                Some(Route::Ready { pool, .. } | Route::Waking { pool, .. }) => Arc::clone(pool),
            };
            let admission = pool.admission();
            if queued.is_none() {
                if !pool.enqueue(admission.max_queue) {
                    return Err(queue_full(&pool, agent_id, admission.max_queue));
                }
                queued = Some((
                    Queued(Arc::clone(&pool)),
                    Instant::now() + admission.queue_timeout,
                ));
            }
            let deadline = queued.as_ref().map_or_else(Instant::now, |(_, d)| *d);
            match route {
                Some(Route::Waking { state, .. }) => {
                    if state == State::Idle {
                        if let Ok(agent) = AgentId::new(agent_id) {
                            self.control.send(Input::Wake { agent });
                        }
                    }
                    woken_at.get_or_insert_with(Instant::now);
                    if !changed(&mut rx, deadline).await {
                        return Err(timed_out(
                            &pool,
                            agent_id,
                            admission.queue_timeout,
                            "to be ready",
                        ));
                    }
                }
                Some(Route::Ready {
                    upstreams,
                    draining,
                    ..
                }) => {
                    let slot = if admission.max_concurrency.is_some() {
                        tokio::select! {
                            p = Arc::clone(pool.slots()).acquire_owned() => p.ok(),
                            ok = changed(&mut rx, deadline) => {
                                if ok { continue; }
                                return Err(timed_out(&pool, agent_id, admission.queue_timeout, "for a free slot"));
                            }
                        }
                    } else {
                        None
                    };
                    match choose(&pool, &upstreams, &draining, avoid, hint) {
                        Some((up, session, rebound)) => {
                            let woke = woken_at.map(|t| t.elapsed());
                            if let Some(w) = woke {
                                pool.metrics.observe_wake(w);
                            }
                            return Ok(Admitted {
                                pool,
                                upstream: up,
                                slot,
                                session,
                                rebound,
                                woke,
                            });
                        }
                        // Every ready worker failed this request: wait for the table to change.
                        None => {
                            drop(slot);
                            let wait = tokio::time::timeout(
                                std::time::Duration::from_millis(250),
                                rx.changed(),
                            );
                            if !matches!(wait.await, Ok(Ok(()))) {
                                return Err(ApiError::unavailable(
                                    format!("agent '{agent_id}' is restarting (its worker went away during the request)"),
                                    1,
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether the table changed before `deadline`.
async fn changed(
    rx: &mut tokio::sync::watch::Receiver<Arc<crate::http::route_table::Table>>,
    deadline: Instant,
) -> bool {
    tokio::select! {
        r = rx.changed() => r.is_ok(),
        _ = tokio::time::sleep_until(deadline.into()) => false,
    }
}

/// The ready worker with the fewest requests in flight (ties spread at random).
fn pick(upstreams: &[Arc<Upstream>], avoid: &[WorkerId]) -> Option<Arc<Upstream>> {
    let n = upstreams.len();
    let start = if n > 1 { fastrand::usize(..n) } else { 0 };
    (0..n)
        .map(|i| &upstreams[(start + i) % n])
        .filter(|u| !avoid.contains(&u.worker))
        .min_by_key(|u| u.in_flight.get())
        .cloned()
}

fn not_ready(
    agent_id: &str,
    state: State,
    retry_after_secs: u32,
    reason: Option<&str>,
    woken_at: Option<Instant>,
) -> ApiError {
    let mut msg = if woken_at.is_some() {
        format!(
            "agent '{agent_id}' did not start (state: {})",
            state.as_str()
        )
    } else {
        format!(
            "agent '{agent_id}' is not ready (state: {})",
            state.as_str()
        )
    };
    if let Some(r) = reason {
        msg.push_str(": ");
        msg.push_str(r);
    }
    ApiError::unavailable(msg, retry_after_secs)
}

fn queue_full(pool: &Pool, agent_id: &str, max_queue: u32) -> ApiError {
    pool.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    ApiError::unavailable(
        format!("agent '{agent_id}' is busy: its queue is full ({max_queue} waiting)"),
        1,
    )
}

fn timed_out(pool: &Pool, agent_id: &str, after: std::time::Duration, what: &str) -> ApiError {
    pool.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    ApiError::unavailable(
        format!(
            "agent '{agent_id}' is busy: waited {} s {what}",
            after.as_secs_f64()
        ),
        1,
    )
}
