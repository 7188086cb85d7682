//! The Multi-PAR supervisor: spawns one worker per agent, routes
//! `/agents/{id}/...`, restarts what crashes, shares resources, gathers logs.
//!
//! One task ([`supervisor::Supervisor`]) owns every agent and receives every
//! event; the HTTP side reads what it publishes (the routing table and the
//! status snapshot) and sends it commands.

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
