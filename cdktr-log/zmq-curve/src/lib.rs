//! libzmq with CURVE for the `zmq` crate: a dependency whose build makes
//! the library that `zmq-sys` links (see `build.rs`). Nothing to call.
#![no_std]
