//! The Multi-PAR supervisor: spawns one worker per agent, routes
//! `/agents/{id}/...`, restarts what crashes, shares resources, gathers logs.
//!
//! One task ([`supervisor::Supervisor`]) owns every agent and receives every
//! event; the HTTP side reads what it publishes (the routing table and the
//! status snapshot) and sends it commands.
//!
//! Desired state ([`desired`]): the declared agents are the config file's
//! `[[agents]]`, `PAR_AGENTS` and the optional registry index
//! (`PAR_REGISTRY_URL`, polled every `PAR_REGISTRY_POLL`). They are reconciled
//! on start, on `POST /supervisor/reload`, on SIGHUP and on each poll: new
//! agents start, removed ones drain and stop, changed ones roll out blue/green
//! (also `PUT /supervisor/agents/{id}`). Agents spawned through the API are
//! not declared and reconcile leaves them alone; a `PUT` on a declared agent
//! lasts until the next reconcile sets it back to its declaration. A spec
//! whose rollout failed for a lasting reason (package failure, readiness
//! timeout) is not retried by reconcile until it changes; a `PUT` retries it.
//! Remote packages ([`source`]) are fetched into `$PAR_HOME/downloads` first;
//! give `sha256` to pin content (and to roll a new build at the same URL).

pub mod api;
pub mod cli;
pub mod config;
pub mod desired;
pub mod error;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod resources;
pub mod restart;
pub mod routes;
pub mod server;
pub mod source;
pub mod supervisor;
mod unix;
pub mod upgrade;
