//! The runtime: [`SandboxSpec`] → [`Sandbox`] (planned) → run → [`Outcome`].
//!
//! ```text
//! SandboxSpec ──prepare──▶ Sandbox { MountPlan, id maps, process } ──run──▶ Outcome
//!              (checks, host facts,        (scratch dir, launch,
//!               no effects)                 supervise, clean up)
//! ```
//!
//! Nothing below the spec knows what a derivation is; the Nix semantics
//! that shape a spec (the builder's environment, `/etc`) live in
//! [`environment`] and [`etc`].

pub mod cgroup;
pub mod doctor;
pub mod environment;
mod error;
pub mod etc;
mod filesystem;
mod identity;
pub mod job;
mod policy;
mod run;
mod sandbox;
pub mod scratch;
pub mod sources;
mod spec;
mod supervise;
mod terminal;

pub use error::SandboxError;
pub use hermetic_mountplan::{MountPlan, SandboxPath, SandboxPathError, Step, normalize_target};
pub use hermetic_netns::Network;
pub use hermetic_netns::pasta::resolv_conf as pasta_resolv_conf;
pub use identity::Identity;
pub use policy::RunPolicy;
pub use run::{Outcome, RunOptions};
pub use sandbox::{ProcessPlan, Sandbox};
pub use spec::{BuildUser, SandboxSpec, SpecError};
pub use supervise::{ExitStatus, TimedOut};
