//! Helpers for this workspace's tests; enabled by the `testing` feature,
//! which only the tests turn on.

pub use cdktr_log::testing::{any_ports, free_port, spooled, workspace_binary, write_spool};

/// Flags that make a `cdktr-principal` child bind free ports; its banner
/// says which.
pub const ANY_PORT_FLAGS: [&str; 6] = ["--api-port", "0", "--listening-port", "0", "--publishing-port", "0"];

/// A principal builder binding free ports on 127.0.0.1 (the handle says
/// which).
pub fn local_principal() -> crate::PrincipalBuilder {
    crate::Principal::builder().bus(any_ports()).api(cdktr_log::ApiConfig {
        host: "127.0.0.1".into(),
        port: 0,
    })
}
