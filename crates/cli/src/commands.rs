//! The subcommands that are not a server mode.

pub mod ctl;
pub mod inspect;
pub mod pack;
