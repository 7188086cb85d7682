//! The admin port: where the dashboard and the browser's use of the
//! management API live, an origin no agent is ever served from
//! (`PAR_ADMIN_PORT`, `PAR_ADMIN_HOST`).

use serde::Deserialize;

use super::settings::Settings;
use super::validate::ValidationErrors;

/// The admin port when none is set: outside the default worker range
/// (8001-8100) and away from the supervisor's own (8000, or 80 in the image).
pub const DEFAULT_ADMIN_PORT: u16 = 8900;

/// The admin listener's address when none is set: loopback only, reached
/// through a port forward (ECS Exec, `ssh -L`) unless an operator opens it.
pub const DEFAULT_ADMIN_HOST: &str = "127.0.0.1";

/// `PAR_ADMIN_PORT` / `admin_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminPort {
    /// 8900; a free port when the supervisor's own port is 0 (a free one).
    #[default]
    Default,
    /// No admin listener: no dashboard.
    Off,
    /// This port (0: a free port, logged at start).
    Port(u16),
}

impl AdminPort {
    /// `"8900"`, `"0"`, or `"off"` (also `none`, `false`, `no`).
    pub fn parse(s: &str) -> Result<AdminPort, String> {
        let t = s.trim();
        if matches!(
            t.to_ascii_lowercase().as_str(),
            "off" | "none" | "false" | "no"
        ) {
            return Ok(AdminPort::Off);
        }
        t.parse::<u16>()
            .map(AdminPort::Port)
            .map_err(|_| format!("{s:?} is not a port (0-65535) or \"off\""))
    }

    /// The port to bind, given the supervisor's own; `None` when off.
    pub fn resolve(self, supervisor_port: u16) -> Option<u16> {
        match self {
            AdminPort::Off => None,
            AdminPort::Port(p) => Some(p),
            AdminPort::Default if supervisor_port == 0 => Some(0),
            AdminPort::Default => Some(DEFAULT_ADMIN_PORT),
        }
    }
}

/// `admin_port` in the file: a number or `"off"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AdminPortValue {
    Number(u16),
    Word(String),
}

impl AdminPortValue {
    pub fn parse(&self) -> Result<AdminPort, String> {
        match self {
            AdminPortValue::Number(n) => Ok(AdminPort::Port(*n)),
            AdminPortValue::Word(w) => AdminPort::parse(w),
        }
    }
}

/// The admin port must be neither the supervisor's own nor in the worker range.
pub fn validate(s: &Settings, errors: &mut ValidationErrors) {
    let Some(port) = s.admin_port.resolve(s.port) else {
        return;
    };
    if port == 0 {
        return;
    }
    if port == s.port {
        errors.push(
            "supervisor.admin_port",
            format!(
                "{port} is the supervisor's own port: the dashboard needs an origin agents are not served from"
            ),
        );
    }
    if s.worker_ports.contains(port) {
        errors.push(
            "supervisor.admin_port",
            format!(
                "{port} is inside the worker port range {}-{}",
                s.worker_ports.start, s.worker_ports.end
            ),
        );
    }
    if s.admin_host.trim().is_empty() {
        errors.push("supervisor.admin_host", "must name an address");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_off() {
        assert_eq!(AdminPort::parse("8900").unwrap(), AdminPort::Port(8900));
        assert_eq!(AdminPort::parse(" 0 ").unwrap(), AdminPort::Port(0));
        assert_eq!(AdminPort::parse("OFF").unwrap(), AdminPort::Off);
        let e = AdminPort::parse("89000").unwrap_err();
        assert!(e.contains("89000") && e.contains("off"), "{e}");
        assert!(AdminPort::parse("").is_err());
    }

    #[test]
    fn the_default_follows_a_free_supervisor_port() {
        assert_eq!(AdminPort::Default.resolve(8000), Some(8900));
        assert_eq!(AdminPort::Default.resolve(80), Some(8900));
        assert_eq!(AdminPort::Default.resolve(0), Some(0));
        assert_eq!(AdminPort::Port(9100).resolve(0), Some(9100));
        assert_eq!(AdminPort::Off.resolve(8000), None);
    }

    #[test]
    fn clashes_with_the_supervisor_or_the_workers_are_refused() {
        let check = |port: AdminPort| {
            let s = Settings {
                admin_port: port,
                ..Settings::default()
            };
            let mut e = ValidationErrors::default();
            validate(&s, &mut e);
            e.to_string()
        };
        assert_eq!(check(AdminPort::Default), "");
        assert_eq!(check(AdminPort::Off), "");
        assert!(check(AdminPort::Port(8000)).contains("own port"));
        assert!(check(AdminPort::Port(8050)).contains("worker port range 8001-8100"));
        let file: super::super::ConfigFile =
            toml::from_str("[supervisor]\nadmin_port = \"off\"\n").unwrap();
        let v = file.supervisor.admin_port.unwrap();
        assert_eq!(v.parse().unwrap(), AdminPort::Off);
        let file: super::super::ConfigFile =
            toml::from_str("[supervisor]\nadmin_port = 9100\n").unwrap();
        assert_eq!(
            file.supervisor.admin_port.unwrap().parse().unwrap(),
            AdminPort::Port(9100)
        );
    }
}
