//! Who may use the principal's sockets: [`Security`], and which API
//! requests each role may make.

use cdktr_log::api::Request;
use cdktr_log::curve::{Authorizer, Role};

/// How the principal's three sockets (log PULL, live PUB, API ROUTER)
/// admit clients.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Security {
    /// In clear, no keys: allowed on a loopback address only.
    #[default]
    Loopback,
    /// CURVE on every socket; `Authorizer` says which keys may connect,
    /// with which role.
    Curve(Authorizer),
    /// In clear on any address, because the operator said so
    /// (`--insecure`).
    Insecure,
}

/// Whether `host` (as the bus binds it) is a loopback address.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a client with `role` may make `request`.
pub(crate) fn permits(role: Role, request: &Request) -> bool {
    use Request::*;
    match role {
        Role::Admin => true,
        Role::Publisher => matches!(
            request,
            Ping {}
                | Heartbeat { .. }
                | WorkflowStatusUpdate { .. }
                | TaskStatusUpdate { .. }
                | GetPublisherWatermark { .. }
                | DeclareLost { .. }
        ),
        Role::Reader => matches!(
            request,
            Ping {}
                | QueryLogs { .. }
                | Snapshot { .. }
                | CountLogs { .. }
                | Sql { .. }
                | GetRecentWorkflowStatuses(_)
                | GetWorkflowTimeline { .. }
                | Stats {}
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_loopback() {
        for host in ["127.0.0.1", "127.3.2.1", "localhost", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "*", "10.0.0.5", "::", "example.com", "eth0", ""] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn publishers_write_and_readers_read() {
        let query = Request::QueryLogs {
            query: Default::default(),
            layout: Default::default(),
        };
        let heartbeat = Request::Heartbeat {
            agent_id: "a".into(),
            running: vec![],
        };
        assert!(permits(Role::Reader, &query) && !permits(Role::Publisher, &query));
        assert!(permits(Role::Publisher, &heartbeat) && !permits(Role::Reader, &heartbeat));
        assert!(permits(Role::Admin, &query) && permits(Role::Admin, &heartbeat));
        assert!(permits(Role::Reader, &Request::Ping {}) && permits(Role::Publisher, &Request::Ping {}));
    }
}
