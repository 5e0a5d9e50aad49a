//! Building derivations: the Nix layer between a `.drv` and the sandbox.
//!
//! ```text
//! .drv ──mode, platform──▶ SandboxSpec (inputs closure, env, files) ──Job──▶ run
//!      ──outputs──▶ checked, canonical, scanned, hashed ──▶ registered in the store
//! ```
//!
//! [`schedule`] builds many derivations in dependency order; [`goal`] one.

pub mod attrs;
pub mod auto_gc;
pub mod builtins;
pub mod checks;
pub mod dispatch;
pub mod env;
pub mod error;
pub mod export_graph;
pub mod finish;
pub mod mode;

pub use error::BuildError;
pub mod goal;
pub mod hooks;
pub mod inputs;
pub mod log;
pub mod log_tail;
pub mod outputs;
pub mod refscan;
pub mod schedule;
pub mod spec;
pub mod substitute;

pub use hermetic_store::error_chain;
