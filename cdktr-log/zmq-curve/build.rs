//! Builds libzmq 4.3.5 with CURVE against the libsodium that
//! `libsodium-sys-stable` builds. `zmq-sys`'s own build (libzmq without
//! CURVE) is replaced by a `[target.<triple>.zmq]` table in the workspace's
//! `.cargo/config.toml`; that table also gives the link lines, in the order
//! every linker needs (libzmq, libsodium, the C++ runtime).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The table sets this key; zmq-sys's own build script never does.
    if env::var_os("DEP_ZMQ_CDKTR_CURVE").is_none() {
        panic!(
            "\n\ncdktr-zmq-curve: zmq-sys was built by its own build script, which links a libzmq \
             without CURVE.\nAdd the `[target.<triple>.zmq]` table from cdktr-logs' `.cargo/config.toml` \
             to your own `.cargo/config.toml` (see the README, \"Security\"), or build cdktr-log \
             without its `curve` feature.\n\n"
        );
    }
    // libzmq's own warnings, not ours to fix: without this cargo prints
    // them on every build of the workspace.
    let quiet = format!("{} -w", env::var("CXXFLAGS").unwrap_or_default());
    env::set_var("CXXFLAGS", quiet.trim_start());
    let include = env::var("DEP_SODIUM_INCLUDE").expect("libsodium-sys-stable gives its include dir");
    let lib = env::var("DEP_SODIUM_LIB").expect("libsodium-sys-stable gives its lib dir");
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}
