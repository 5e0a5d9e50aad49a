//! Nix's remote stores, as a client: the worker protocol's encoding and
//! its client side (over a Unix socket or an `ssh` pipe), the machines of
//! Nix's `builders` setting and the choice among them, and a build sent to
//! one of them (its inputs copied there, its outputs copied back).

pub mod build_remote;
pub mod client;
pub mod machines;
pub mod protocol;
pub mod serve_client;
pub mod ssh;
pub mod wire;
