//! The supervisor's HTTP side: the listener and its proxy threads (`server`),
//! the hot path to workers (`proxy`, reading `route_table`), the management
//! API (`api`), the dashboard page, metrics, and the one HTTP error type.

pub mod api;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod leftover;
pub mod metrics;
pub mod proxy;
pub mod rewind;
pub mod route_table;
pub mod server;
pub mod sessions;
