//! The worker: loads one agent package and serves its surfaces on one port.

pub mod cli;
