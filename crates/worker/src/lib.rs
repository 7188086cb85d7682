//! The worker: loads one agent package and serves its surfaces on one port.
//!
//! Contract (see DESIGN.md §3):
//!
//! - Environment from the supervisor: `PAR_PORT`, `PAR_AGENT_ID`, `PAR_PACKAGE_PATH`,
//!   `PAR_PACKAGE_SHA256`, `PAR_HOME`, `PAR_SUPERVISOR_URL` (passed on to the agent
//!   host with `PAR_AGENT_ID` and `PAR_PACKAGE_ID`), `PAR_INVOKE_TIMEOUT` (default
//!   300 s), `PAR_SHUTDOWN_GRACE` (10 s), `PAR_HOST_THREADS` (64), `PAR_LOG`,
//!   `PAR_LOG_FORMAT=json`, `PAR_PARENT_PID` (the supervisor's pid).
//! - Supervised (`PAR_SUPERVISOR_URL` or `PAR_PARENT_PID` set), the worker sets its
//!   own parent-death signal (SIGKILL) at start, since exec of a `par` with file
//!   capabilities clears the one the supervisor set; it exits 1 at once when its
//!   parent is not `PAR_PARENT_PID` (the supervisor already died). The agent host
//!   dies with the worker the same way.
//! - `PAR_LISTEN_FD` (set by the supervisor, which holds the worker port range):
//!   the listening socket for `PAR_PORT`, served on instead of binding; checked
//!   (an open listening socket on that port), made close-on-exec, and the worker
//!   made non-dumpable so that agent code cannot copy it. Without it the worker
//!   binds `PAR_HOST:PAR_PORT` itself (exit 75 when the port is taken).
//! - Liveness: `PAR_LIVENESS_INTERVAL` (10 s, `off`), `PAR_LIVENESS_TIMEOUT` (5 s),
//!   `PAR_LIVENESS_FAILURES` (6): pings the agent's event loop answers
//!   ([`host::liveness`]); after that many misses in a row, exit 70.
//! - The port is bound first; the package loads in the background. `GET /health`
//!   answers at once: `{"status":"starting"|"ready"|"error", "agent_id",
//!   "package_id", "error"?, "surfaces"}`, 200 only when ready. `surfaces` holds
//!   only what the package declares, each `{"status":"starting"|"ready"|"error",
//!   "error"?}`: `rest` (a `rest.entry` or an `http_server` ASGI app), `a2a`, `ui`.
//!   A failing surface (UI folder missing, A2A factory raising) does not fail the others.
//! - Exit codes: 78 when the package cannot load (bad manifest, missing file,
//!   import error or failing `mount(app)` in agent code, unsupported runtime);
//!   1 for any other fatal error (the agent host died, dependency install failed);
//!   0 after SIGTERM/SIGINT (in-flight requests finish within the grace period).
//! - `POST /invoke` and `POST /exports/{name}` take a JSON document; an empty or
//!   whitespace body is a 400 that says so.
//! - `POST /exports/{name}`: only `metadata.sub_agents` with `public: true`. The
//!   host calls the function of that name (hyphens become underscores) in the
//!   entrypoint's module with the JSON body; when there is none, the entrypoint
//!   handler gets `{"action": name, ...body}`. For a package without an export
//!   of that name, `execute`, `invoke`, `get_info` and `list_capabilities` call
//!   the entrypoint handler with the body as it is (as the original PAR did).
//! - UI (`ui.path`): served at `/ui/` always and at `ui.basePath` (default `/`);
//!   see [`ui::UiMounts`] for which of the UI and the agent's routes answers first.
//! - WebSocket upgrades go to the agent's ASGI app (`websocket` scope); a worker
//!   that stops, or whose agent host dies, closes them with 1012.
//! - The agent host (`host/host.py`) talks over a socketpair with framed messages;
//!   the protocol is described at the top of that file. A streamed response has a
//!   flow-control window per request (`STREAM_WINDOW`, 1 MiB): a slow client makes
//!   the agent's `send` wait instead of growing the worker's memory. The invoke
//!   timeout covers only the response head; a stream may stay silent for any time.

mod a2a_backend;
mod asgi;
mod cache;
pub mod cli;
mod error;
pub mod host;
mod listener;
mod loader;
mod metrics;
mod routes;
mod state;
mod trace;
pub mod ui;
mod unix;
pub mod worker;
