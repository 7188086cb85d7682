//! The agent host: the child process that runs the agent's Python code, and the channel to it.

mod channel;
pub mod liveness;
mod process;
pub mod protocol;

pub use channel::{Hello, HostChannel, Pending, Reply};
pub use process::{spawn, HostSpec, HOST_PY};
