//! `tracing` to stdout, one rule for every mode: `PAR_LOG` is the filter
//! (default `info`); `PAR_LOG_FORMAT=json|pretty` the format, and without it
//! JSON (one object per line, what CloudWatch and the supervisor read) unless
//! stdout is a terminal.

use std::io::IsTerminal as _;

/// The format `PAR_LOG_FORMAT` and stdout ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty,
}

impl Format {
    pub fn choose(var: Option<&str>, terminal: bool) -> Format {
        match var.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => Format::Json,
            Some(v) if v.eq_ignore_ascii_case("pretty") => Format::Pretty,
            _ if terminal => Format::Pretty,
            _ => Format::Json,
        }
    }
}

/// Installs the subscriber (once; later calls do nothing).
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PAR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let var = std::env::var("PAR_LOG_FORMAT").ok();
    let format = Format::choose(var.as_deref(), std::io::stdout().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        Format::Pretty => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule() {
        assert_eq!(Format::choose(Some("json"), true), Format::Json);
        assert_eq!(Format::choose(Some("PRETTY"), false), Format::Pretty);
        assert_eq!(Format::choose(None, false), Format::Json);
        assert_eq!(Format::choose(None, true), Format::Pretty);
        assert_eq!(Format::choose(Some("bogus"), false), Format::Json);
    }
}
