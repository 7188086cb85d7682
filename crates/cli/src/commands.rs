//! Helper subcommands that are not a server mode.

pub mod inspect;
pub mod pack;
