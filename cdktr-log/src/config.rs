//! Where the principal lives: its host, the bus's two log ports and the
//! API port.

use crate::error::{Error, Result};

/// Env var naming the principal's host (default `127.0.0.1`).
pub const ENV_HOST: &str = "CDKTR_PRINCIPAL_HOST";
/// Env var naming the port agents push logs to (default 5562).
pub const ENV_LISTENING_PORT: &str = "CDKTR_LOGS_LISTENING_PORT";
/// Env var naming the port subscribers read logs from (default 5563).
pub const ENV_PUBLISHING_PORT: &str = "CDKTR_LOGS_PUBLISHING_PORT";
/// Env var naming the principal's API port (default 5561).
pub const ENV_PRINCIPAL_PORT: &str = "CDKTR_PRINCIPAL_PORT";

/// The addresses of the log bus, shared by publishers, the manager and
/// subscribers. The manager binds these; the others connect to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Host of the principal (the manager binds it; clients connect to it).
    pub host: String,
    /// Port the manager's PULL socket listens on. 0 binds any free port.
    pub listening_port: u16,
    /// Port the manager's PUB socket publishes on. 0 binds any free port.
    pub publishing_port: u16,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            host: "127.0.0.1".into(),
            listening_port: 5562,
            publishing_port: 5563,
        }
    }
}

impl BusConfig {
    /// Reads the configuration from `CDKTR_PRINCIPAL_HOST`,
    /// `CDKTR_LOGS_LISTENING_PORT` and `CDKTR_LOGS_PUBLISHING_PORT`; unset
    /// variables take their defaults.
    ///
    /// # Errors
    /// [`Error::InvalidEnv`], naming the variable, for an empty host or a port
    /// that is not a number from 1 to 65535.
    pub fn from_env() -> Result<BusConfig> {
        Self::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<BusConfig> {
        let mut c = BusConfig::default();
        if let Some(h) = get(ENV_HOST) {
            c.host = parse_host(h)?;
        }
        if let Some(p) = get(ENV_LISTENING_PORT) {
            c.listening_port = parse_port(ENV_LISTENING_PORT, p)?;
        }
        if let Some(p) = get(ENV_PUBLISHING_PORT) {
            c.publishing_port = parse_port(ENV_PUBLISHING_PORT, p)?;
        }
        Ok(c)
    }

    /// `tcp://host:listening_port`.
    pub fn listening_endpoint(&self) -> String {
        endpoint(&self.host, self.listening_port)
    }

    /// `tcp://host:publishing_port`.
    pub fn publishing_endpoint(&self) -> String {
        endpoint(&self.host, self.publishing_port)
    }
}

/// The address of the principal's request/reply API (see `docs/api.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Host of the principal.
    pub host: String,
    /// The API port. 0 binds any free port.
    pub port: u16,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            host: "127.0.0.1".into(),
            port: 5561,
        }
    }
}

impl ApiConfig {
    /// Reads `CDKTR_PRINCIPAL_HOST` and `CDKTR_PRINCIPAL_PORT`; unset
    /// variables take their defaults.
    ///
    /// # Errors
    /// [`Error::InvalidEnv`], naming the variable.
    pub fn from_env() -> Result<ApiConfig> {
        Self::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ApiConfig> {
        let mut c = ApiConfig::default();
        if let Some(h) = get(ENV_HOST) {
            c.host = parse_host(h)?;
        }
        if let Some(p) = get(ENV_PRINCIPAL_PORT) {
            c.port = parse_port(ENV_PRINCIPAL_PORT, p)?;
        }
        Ok(c)
    }

    /// `tcp://host:port`.
    pub fn endpoint(&self) -> String {
        endpoint(&self.host, self.port)
    }
}

fn parse_host(h: String) -> Result<String> {
    if h.trim().is_empty() {
        return Err(Error::InvalidEnv {
            var: ENV_HOST,
            value: h,
            reason: "empty host",
        });
    }
    Ok(h.trim().to_owned())
}

/// Parses a port from the environment, naming `var` in the error.
///
/// # Errors
/// [`Error::InvalidEnv`] unless `value` is a number from 1 to 65535.
pub fn parse_port(var: &'static str, value: String) -> Result<u16> {
    let reason = match value.trim().parse::<u32>() {
        _ if value.trim().is_empty() => "empty port",
        Ok(0) => "port 0 is not a usable port",
        Ok(p) if p <= u16::MAX as u32 => return Ok(p as u16),
        Ok(_) => "port out of range 1-65535",
        Err(_) => "not a port number",
    };
    Err(Error::InvalidEnv { var, value, reason })
}

pub(crate) fn endpoint(host: &str, port: u16) -> String {
    // Port 0 asks ZeroMQ for any free port.
    let port = if port == 0 { "*".to_owned() } else { port.to_string() };
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_when_unset() {
        assert_eq!(BusConfig::from_lookup(lookup(&[])).unwrap(), BusConfig::default());
        assert_eq!(BusConfig::default().listening_endpoint(), "tcp://127.0.0.1:5562");
        assert_eq!(BusConfig::default().publishing_endpoint(), "tcp://127.0.0.1:5563");
    }

    #[test]
    fn reads_every_variable() {
        let c = BusConfig::from_lookup(lookup(&[
            (ENV_HOST, "10.0.0.7"),
            (ENV_LISTENING_PORT, "7000"),
            (ENV_PUBLISHING_PORT, " 7001 "),
        ]))
        .unwrap();
        assert_eq!(
            c,
            BusConfig {
                host: "10.0.0.7".into(),
                listening_port: 7000,
                publishing_port: 7001
            }
        );
    }

    #[test]
    fn api_config_reads_host_and_port() {
        assert_eq!(
            ApiConfig::from_lookup(lookup(&[])).unwrap().endpoint(),
            "tcp://127.0.0.1:5561"
        );
        let c = ApiConfig::from_lookup(lookup(&[(ENV_HOST, "::1"), (ENV_PRINCIPAL_PORT, "6000")])).unwrap();
        assert_eq!(c.endpoint(), "tcp://[::1]:6000");
        let err = ApiConfig::from_lookup(lookup(&[(ENV_PRINCIPAL_PORT, "x")])).unwrap_err();
        assert!(err.to_string().contains(ENV_PRINCIPAL_PORT), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            (ENV_LISTENING_PORT, "abc"),
            (ENV_LISTENING_PORT, "70000"),
            (ENV_PUBLISHING_PORT, ""),
            (ENV_PUBLISHING_PORT, "0"),
            (ENV_PUBLISHING_PORT, "-1"),
            (ENV_HOST, " "),
        ] {
            let err = BusConfig::from_lookup(lookup(&[(var, value)])).unwrap_err();
            assert!(
                matches!(err, Error::InvalidEnv { var: v, .. } if v == var),
                "{var}={value:?}"
            );
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn endpoints_bracket_ipv6_and_map_port_zero_to_any() {
        assert_eq!(endpoint("::1", 5), "tcp://[::1]:5");
        assert_eq!(endpoint("127.0.0.1", 0), "tcp://127.0.0.1:*");
    }
}
