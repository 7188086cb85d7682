//! The Multi-PAR supervisor: spawns one worker per agent, routes
//! `/agents/{id}/...`, restarts what crashes, shares resources, gathers logs.
//!
//! Where things live:
//! - [`model`]: the vocabulary — ids, specs, states, inputs, effects, views.
//! - [`state`]: every decision, as a pure state machine (`handle(input) ->
//!   effects`), tested without processes.
//! - [`runtime`]: carries out effects (processes, probes, signals, timers,
//!   fetches) and turns what happens into inputs; desired state (config file,
//!   `PAR_AGENTS`, registry) and the resource sampler.
//! - [`dispatcher`]: one task that feeds the state machine in one order and
//!   publishes the routing table and the process snapshot.
//! - [`http`]: the listener, the proxy, the management API, metrics.
//! - [`control`]: the handle between them; [`config`], [`logs`], [`cli`].
//!
//! Desired state: the declared agents are reconciled on start,
//! `POST /supervisor/reload`, SIGHUP and each registry poll: new agents
//! start, removed ones drain and stop, changed ones roll out blue/green (also
//! `PUT /supervisor/agents/{id}`). Agents spawned through the API are not
//! declared and reconcile leaves them alone; a `PUT` on a declared agent lasts
//! until the next reconcile sets it back to its declaration. A spec whose
//! rollout failed for a lasting reason is not retried by reconcile until it
//! changes; a `PUT` retries it.

pub mod cli;
pub mod config;
pub mod control;
pub mod dispatcher;
pub mod http;
pub mod logs;
pub mod model;
pub mod runtime;
pub mod state;
pub mod supervisor;
