//! Nix's configuration as hermetic reads it: every setting declared once
//! ([`settings`]), and where values come from — nix.conf with its includes,
//! `NIX_CONFIG`, `--option` — read in Nix's order and syntax ([`nixconf`]).
//! The sandbox core never sees this crate: it receives plain values.

pub mod nixconf;
pub mod settings;

pub use settings::{
    ClientRule, DECLARATIONS, Declaration, HostDefaults, SandboxMode, SandboxPathEntry, Settings,
    SettingsError,
};
