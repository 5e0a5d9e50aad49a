//! Building derivations: the Nix layer between a `.drv` and the sandbox.
//!
//! ```text
//! .drv ──mode, platform──▶ SandboxSpec (inputs closure, env, files) ──Job──▶ run
//!      ──outputs──▶ checked, canonical, scanned, hashed ──▶ registered in the store
//! ```
//!
//! [`schedule`] builds many derivations in dependency order; [`goal`] one.

pub mod attrs;
pub mod checks;
pub mod env;
pub mod error;
pub mod mode;

pub use error::BuildError;
pub mod goal;
pub mod hooks;
pub mod log;
pub mod outputs;
pub mod refscan;

/// The whole error chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
pub mod schedule;
