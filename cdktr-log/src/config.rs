//! Where the principal lives (its host, the bus's two log ports and the
//! API port), and the one way every crate reads a setting from the
//! environment: [`env()`] and [`Setting`].

use std::num::{NonZeroU16, NonZeroU32};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Reads variables by name: the process environment
/// ([`process_env`]) or, in tests and embedding programs, any other
/// source.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as a [`Lookup`]. A value that is not UTF-8 is
/// read lossily, and so refused by any setting it no longer spells.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var_os(var).map(|v| v.to_string_lossy().into_owned())
}

/// How the text of a variable becomes a typed value.
pub trait Setting: Sized {
    /// Parses `raw` (already trimmed). `Err` says what was expected.
    ///
    /// # Errors
    /// A short reason, e.g. "expected milliseconds, at least 1".
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str>;
}

/// Reads `var` through `get`: `None` when unset, else its typed value.
///
/// # Errors
/// [`Error::InvalidEnv`] naming `var` for a value that does not parse
/// (an empty one included).
pub fn env<T: Setting>(var: &'static str, get: Lookup<'_>) -> Result<Option<T>> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    let reason = match value.trim() {
        "" => "empty value",
        raw => match T::parse_setting(raw) {
            Ok(v) => return Ok(Some(v)),
            Err(reason) => reason,
        },
    };
    Err(Error::InvalidEnv { var, value, reason })
}

/// Non-empty text, trimmed.
impl Setting for String {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        Ok(raw.to_owned())
    }
}

/// A non-empty path.
impl Setting for PathBuf {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        Ok(PathBuf::from(raw))
    }
}

/// A TCP port, 1 to 65535.
impl Setting for NonZeroU16 {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        match raw.parse::<u32>() {
            Ok(0) => Err("port 0 is not a usable port"),
            Ok(p) => u16::try_from(p)
                .ok()
                .and_then(NonZeroU16::new)
                .ok_or("port out of range 1-65535"),
            Err(_) => Err("not a port number"),
        }
    }
}

/// A count, at least 1.
impl Setting for NonZeroU32 {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        raw.parse().map_err(|_| "expected a whole number, at least 1")
    }
}

/// A whole number of milliseconds, at least 1 (every `*_MS` variable).
impl Setting for Duration {
    fn parse_setting(raw: &str) -> std::result::Result<Self, &'static str> {
        match raw.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err("expected a whole number of milliseconds, at least 1"),
        }
    }
}

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
        Self::from_lookup(process_env)
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<BusConfig> {
        let (get, d): (Lookup<'_>, _) = (&get, BusConfig::default());
        Ok(BusConfig {
            host: env(ENV_HOST, get)?.unwrap_or(d.host),
            listening_port: env::<NonZeroU16>(ENV_LISTENING_PORT, get)?.map_or(d.listening_port, NonZeroU16::get),
            publishing_port: env::<NonZeroU16>(ENV_PUBLISHING_PORT, get)?.map_or(d.publishing_port, NonZeroU16::get),
        })
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
        Self::from_lookup(process_env)
    }

    /// As [`from_env`](Self::from_env), reading variables through `get`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ApiConfig> {
        let (get, d): (Lookup<'_>, _) = (&get, ApiConfig::default());
        Ok(ApiConfig {
            host: env(ENV_HOST, get)?.unwrap_or(d.host),
            port: env::<NonZeroU16>(ENV_PRINCIPAL_PORT, get)?.map_or(d.port, NonZeroU16::get),
        })
    }

    /// `tcp://host:port`.
    pub fn endpoint(&self) -> String {
        endpoint(&self.host, self.port)
    }
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
    fn settings_parse_one_way_and_name_the_variable() {
        let get = lookup(&[("MS", " 250 "), ("ZERO", "0"), ("EMPTY", "  "), ("N", "3"), ("P", "x")]);
        let get: Lookup<'_> = &get;
        assert_eq!(env::<Duration>("MS", get).unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(env::<Duration>("UNSET", get).unwrap(), None);
        assert_eq!(env::<NonZeroU32>("N", get).unwrap(), NonZeroU32::new(3));
        assert_eq!(env::<PathBuf>("P", get).unwrap(), Some(PathBuf::from("x")));
        for (var, why) in [
            ("ZERO", "milliseconds, at least 1"),
            ("EMPTY", "empty value"),
            ("P", "milliseconds"),
        ] {
            match env::<Duration>(var, get) {
                Err(Error::InvalidEnv { var: v, reason, .. }) => {
                    assert_eq!(v, var);
                    assert!(reason.contains(why), "{var}: {reason}");
                }
                other => panic!("{var}: {other:?}"),
            }
        }
        assert!(env::<NonZeroU32>("ZERO", get).is_err());
        assert!(env::<String>("EMPTY", get).is_err());
        assert!(env::<NonZeroU16>("ZERO", get).is_err());
    }

    #[test]
    fn endpoints_bracket_ipv6_and_map_port_zero_to_any() {
        assert_eq!(endpoint("::1", 5), "tcp://[::1]:5");
        assert_eq!(endpoint("127.0.0.1", 0), "tcp://127.0.0.1:*");
    }
}
