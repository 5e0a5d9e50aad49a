//! The thin daemon: it identifies clients, applies the trust model (SPEC
//! section 14), speaks the Nix worker protocol that Nix 2.8's client uses,
//! and hands builds to the build layer. Policy stays below it.

pub mod connection;
pub mod limits;
pub mod protocol;
pub mod server;
pub mod trust;

pub use hermetic_remote::wire;
