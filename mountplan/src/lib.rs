//! The sandbox's filesystem as data, and the only code that mounts.
//!
//! * [`SandboxPath`]: `sandbox-paths` entries in Nix's syntax (B50, B53);
//! * [`Layout`]: what the sandbox holds, as facts the caller gathered;
//! * [`MountPlan`]: the layout as ordered steps (pure data, printable);
//! * [`CompiledPlan`]: the steps as system-call arguments, made in the parent;
//! * [`apply`]: runs a compiled plan in the launched child, allocating nothing.

mod apply;
mod compile;
mod layout;
mod plan;
mod sandbox_path;

pub use apply::apply;
pub use compile::{CompileError, CompiledPlan, MAX_LAYERS, Pinned};
pub use layout::{
    BindEntry, DevLayout, Layout, LayoutError, Source, SourceKind, StoreInput, StoreLayer,
};
pub use plan::{MountPlan, Step};
pub use sandbox_path::{SandboxPath, SandboxPathError, normalize_target};
