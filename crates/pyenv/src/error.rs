//! The Python environment error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("runtime {0:?} cannot be run by this PAR (only python3.x runtimes are supported)")]
    UnsupportedRuntime(String),
    #[error("no usable Python interpreter: tried {tried}")]
    NoPython { tried: String },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {path}: {message}")]
    BadPyproject { path: PathBuf, message: String },
    #[error("failed to prepare {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("installing dependencies failed ({step}, {status}); last output:\n{tail}")]
    Install {
        step: String,
        status: String,
        tail: String,
    },
    #[error("installing dependencies took longer than {seconds} s ({step}); last output:\n{tail}")]
    Timeout {
        step: String,
        seconds: u64,
        tail: String,
    },
}
