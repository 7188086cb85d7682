//! The worker: loads one agent package and serves its surfaces on one port.

mod a2a_backend;
mod asgi;
pub mod cli;
mod error;
pub mod host;
mod loader;
mod metrics;
mod routes;
mod state;
pub mod ui;
mod unix;
pub mod worker;
