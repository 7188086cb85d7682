//! Conversations kept with their process. An agent built on pixell-sdk holds
//! each conversation's state (plan mode's pending question, the history) in
//! the memory of the process that served it, keyed by its session id; every
//! request of a session must reach that process while it runs.
//!
//! Each agent whose sessions are tracked has one table: session key → the
//! worker it is bound to. A new session goes to the least loaded ready
//! worker; a binding ends after the agent's `session_idle_timeout` without a
//! request, or its `session_max_lifetime`, and the table holds at most
//! `max_sessions` (the least recently used binding goes first). A worker kept
//! only for its sessions (the old version after a rollout, a replica scaled
//! away) is still routed to for them; a binding whose worker is gone is
//! rebound and counted lost.
//!
//! How a request's key is found is in `key`.

pub mod key;
mod skim;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::http::route_table::Upstream;
use crate::model::SessionSettings;

/// How precisely the last use of a binding is kept: a binding may end up to
/// this much before its idle timeout.
const USE_GRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest session key kept (longer keys route as if there were none).
pub const MAX_KEY: usize = 256;

/// Interaction ids (a pending clarification, selection, plan or permission)
/// remembered per session: what an agent asks in one session is not many.
const MAX_INTERACTIONS_PER_SESSION: usize = 64;

/// One agent's sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    table: Mutex<Table>,
}

/// What happened to the agent's sessions, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub started: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
    /// Bound to a worker that was gone: it crashed or was stopped.
    pub lost_exited: AtomicU64,
    /// Bound to a worker stopped when its drain time for sessions ran out.
    pub lost_drained: AtomicU64,
    pub rebound: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    bindings: HashMap<Box<str>, Binding>,
    /// Keys by last use: the least recently used first.
    by_use: BTreeMap<Stamp, Box<str>>,
    /// Interaction id → the session it was asked in.
    interactions: HashMap<Box<str>, Box<str>>,
    seq: u64,
}

/// When a binding was last used, unique per table.
type Stamp = (Instant, u64);

#[derive(Debug)]
struct Binding {
    upstream: Arc<Upstream>,
    started: Instant,
    used: Stamp,
    interactions: Vec<Box<str>>,
}

/// Where a request of a session goes.
#[derive(Debug)]
pub struct Placed {
    pub upstream: Arc<Upstream>,
    /// Its worker had gone: the session starts over on this one.
    pub rebound: bool,
}

impl Sessions {
    /// Live bindings.
    pub fn live(&self) -> usize {
        self.lock().bindings.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker for a request of session `key`: its bound worker when it
    /// is among `ready` or `draining` and not in `avoid`, else the least
    /// loaded of `ready` (bound from now on). None when no ready worker is
    /// left to take it.
    #[allow(clippy::too_many_arguments)]
    pub fn place(
        &self,
        key: &str,
        ready: &[Arc<Upstream>],
        draining: &[Arc<Upstream>],
        avoid: &[crate::model::WorkerId],
        settings: &SessionSettings,
        counters: &Counters,
        now: Instant,
    ) -> Option<Placed> {
        let mut guard = self.lock();
        let t = &mut *guard;
        let mut rebound = false;
        if let Some(b) = t.bindings.get_mut(key) {
            let idle = now.saturating_duration_since(b.used.0);
            let expired = idle >= settings.idle_timeout
                || now.saturating_duration_since(b.started) >= settings.max_lifetime;
            let worker = b.upstream.worker;
            let drained = b.upstream.drained_for_sessions();
            let here = ready
                .iter()
                .chain(draining)
                .find(|u| u.worker == worker && !avoid.contains(&u.worker));
            match (expired, here) {
                (false, Some(up)) => {
                    let up = Arc::clone(up);
                    // The order of use is kept to a second: a session's
                    // every request need not move it in the index.
                    if idle >= USE_GRAIN {
                        t.seq += 1;
                        let used = (now, t.seq);
                        let old = std::mem::replace(&mut b.used, used);
                        if let Some(k) = t.by_use.remove(&old) {
                            t.by_use.insert(used, k);
                        }
                    }
                    return Some(Placed {
                        upstream: up,
                        rebound: false,
                    });
                }
                (true, _) => {
                    counters.expired.fetch_add(1, Ordering::Relaxed);
                    t.unbind(key);
                }
                (false, None) => {
                    // Its process is gone (or failed this very request).
                    let lost = if drained {
                        &counters.lost_drained
                    } else {
                        &counters.lost_exited
                    };
                    lost.fetch_add(1, Ordering::Relaxed);
                    counters.rebound.fetch_add(1, Ordering::Relaxed);
                    rebound = true;
                }
            }
        }
        let up = least_loaded(ready, avoid)?;
        if rebound {
            t.rebind(key, Arc::clone(&up), now);
        } else {
            counters.started.fetch_add(1, Ordering::Relaxed);
            t.bind(key, Arc::clone(&up), now);
            while t.bindings.len() > settings.max_sessions {
                if !t.evict_oldest() {
                    break;
                }
                counters.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Placed {
            upstream: up,
            rebound,
        })
    }

    /// Ends the bindings unused for the idle timeout or past their lifetime.
    pub fn sweep(&self, settings: &SessionSettings, counters: &Counters, now: Instant) {
        let mut t = self.lock();
        let mut ended = Vec::new();
        for (stamp, key) in &t.by_use {
            if now.saturating_duration_since(stamp.0) < settings.idle_timeout {
                break;
            }
            ended.push(key.clone());
        }
        let old = now.checked_sub(settings.max_lifetime);
        if let Some(old) = old {
            ended.extend(
                t.bindings
                    .iter()
                    .filter(|(_, b)| b.started <= old)
                    .map(|(k, _)| k.clone()),
            );
        }
        for key in ended {
            if t.unbind(&key) {
                counters.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every binding gone (the agent stopped tracking sessions, or left).
    pub fn clear(&self) {
        let mut t = self.lock();
        let keys: Vec<_> = t.bindings.keys().cloned().collect();
        for k in keys {
            t.unbind(&k);
        }
    }

    /// An agent's event in session `key` named an interaction id (a
    /// clarification, selection, plan or permission it waits on).
    pub fn remember_interaction(&self, key: &str, id: &str) {
        if id.is_empty() || id.len() > MAX_KEY {
            return;
        }
        let mut t = self.lock();
        let t = &mut *t;
        let Some(b) = t.bindings.get_mut(key) else {
            return;
        };
        if b.interactions.iter().any(|i| &**i == id) {
            return;
        }
        if b.interactions.len() == MAX_INTERACTIONS_PER_SESSION {
            let first = b.interactions.remove(0);
            t.interactions.remove(&first);
        }
        b.interactions.push(id.into());
        if let Some(other) = t.interactions.insert(id.into(), key.into()) {
            // The id moved to this session: the other no longer owns it.
            if &*other != key {
                if let Some(ob) = t.bindings.get_mut(&other) {
                    ob.interactions.retain(|i| &**i != id);
                }
            }
        }
    }

    /// The session an interaction id was asked in.
    pub fn session_of(&self, interaction: &str) -> Option<Box<str>> {
        self.lock().interactions.get(interaction).cloned()
    }

    /// A session an agent made up for a request that named none, bound to
    /// the worker that made it (unless the key is bound already).
    pub fn adopt(
        &self,
        key: &str,
        upstream: &Arc<Upstream>,
        settings: &SessionSettings,
        counters: &Counters,
        now: Instant,
    ) {
        let mut t = self.lock();
        if t.bindings.contains_key(key) {
            return;
        }
        counters.started.fetch_add(1, Ordering::Relaxed);
        t.bind(key, Arc::clone(upstream), now);
        while t.bindings.len() > settings.max_sessions {
            if !t.evict_oldest() {
                break;
            }
            counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Interaction ids remembered (bounded by the bindings).
    #[cfg(test)]
    pub fn interactions(&self) -> usize {
        self.lock().interactions.len()
    }
}

impl Table {
    fn next_stamp(&mut self, now: Instant) -> Stamp {
        self.seq += 1;
        (now, self.seq)
    }

    fn bind(&mut self, key: &str, upstream: Arc<Upstream>, now: Instant) {
        let used = self.next_stamp(now);
        upstream.sessions.enter();
        let key: Box<str> = key.into();
        self.by_use.insert(used, key.clone());
        self.bindings.insert(
            key,
            Binding {
                upstream,
                started: now,
                used,
                interactions: Vec::new(),
            },
        );
    }

    /// The same session on another worker: it starts over there.
    fn rebind(&mut self, key: &str, upstream: Arc<Upstream>, now: Instant) {
        self.unbind(key);
        self.bind(key, upstream, now);
    }

    fn unbind(&mut self, key: &str) -> bool {
        let Some(b) = self.bindings.remove(key) else {
            return false;
        };
        self.by_use.remove(&b.used);
        for i in &b.interactions {
            self.interactions.remove(i);
        }
        b.upstream.sessions.leave();
        true
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.by_use.first_key_value() else {
            return false;
        };
        let key = key.clone();
        self.unbind(&key)
    }
}

/// Watches a reply of an agent whose sessions are tracked: the interaction
/// ids it names are remembered as asked in the request's session, and a
/// session the agent made up (the request named none) is bound to the
/// worker that made it.
pub struct Watch {
    pool: Arc<crate::http::route_table::Pool>,
    upstream: Arc<Upstream>,
    key: Option<Arc<str>>,
    scan: key::Interactions,
}

impl Watch {
    /// For a request of `session`, or (None) one that named no session.
    pub fn new(
        pool: Arc<crate::http::route_table::Pool>,
        upstream: Arc<Upstream>,
        session: Option<Arc<str>>,
    ) -> Self {
        let scan = if session.is_some() {
            key::Interactions::default()
        } else {
            key::Interactions::learning_session()
        };
        Watch {
            pool,
            upstream,
            key: session,
            scan,
        }
    }

    /// Watches another reply, as `new` would, in place (its buffers kept).
    pub fn reset(
        &mut self,
        pool: Arc<crate::http::route_table::Pool>,
        upstream: Arc<Upstream>,
        session: Option<Arc<str>>,
    ) {
        self.pool = pool;
        self.upstream = upstream;
        self.scan.reset(session.is_none());
        self.key = session;
    }

    /// The reply's next bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.scan.feed(bytes);
        if let Some(made) = self.scan.take_session() {
            if let Some(settings) = self.pool.session_settings() {
                self.pool.sessions.adopt(
                    &made,
                    &self.upstream,
                    &settings,
                    &self.pool.metrics.sessions,
                    Instant::now(),
                );
                self.key = Some(made.into());
            }
        }
        if let Some(key) = &self.key {
            for id in self.scan.take() {
                self.pool.sessions.remember_interaction(key, &id);
            }
        }
    }
}

/// The ready worker with the fewest requests in flight, then the fewest
/// sessions (ties spread at random), not in `avoid`.
fn least_loaded(
    ready: &[Arc<Upstream>],
    avoid: &[crate::model::WorkerId],
) -> Option<Arc<Upstream>> {
    let n = ready.len();
    let start = if n > 1 { fastrand::usize(..n) } else { 0 };
    (0..n)
        .map(|i| &ready[(start + i) % n])
        .filter(|u| !avoid.contains(&u.worker))
        .min_by_key(|u| (u.in_flight.get(), u.sessions.get()))
        .cloned()
}

#[cfg(test)]
mod tests;
