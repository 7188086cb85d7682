//! Worker log capture: line parsing with bounded fields (`line`), the rings
//! bounded in lines and bytes and their followers (`store`), and reading the
//! workers' pipes (`capture`).

mod capture;
mod line;
mod metrics;
mod store;

pub use capture::capture;
pub use line::{cut, parse_line, FieldLimits, Level, Parsed};
pub use store::{Counters, Filter, Limits, LogEntry, LogStore};
