//! The store's errors: each names the operation and the path it failed on.

use std::io;
use std::path::PathBuf;

use crate::derivation::{DrvCheckError, DrvParseError};
use crate::nar::NarError;
use crate::path::BadStorePath;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("cannot {op} '{path}'")]
    Io {
        /// The operation (`create directory`, `rename`, …).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The database refused an operation.
    #[error("cannot {op} in the store database '{path}'")]
    Db {
        /// The operation.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database's schema is newer than Nix 2.8's (Nix's text).
    #[error("current Nix store schema is version {found}, but I only support {supported}")]
    SchemaTooNew {
        /// The schema version found.
        found: u32,
        /// The version hermetic knows.
        supported: u32,
    },
    /// The database's schema is older than Nix 2.8's.
    #[error(
        "the store database in '{0}' has an old schema version: run a Nix command on this store (e.g. 'nix-store --verify') to upgrade it"
    )]
    SchemaTooOld(PathBuf),
    /// A path that is not a store path.
    #[error(transparent)]
    BadPath(#[from] BadStorePath),
    /// A store path that is not registered as valid (Nix's text).
    #[error("path '{0}' is not valid")]
    NotValid(String),
    /// A path to register refers to a path that is not valid.
    #[error("cannot register '{path}': its reference '{reference}' is not valid")]
    InvalidReference {
        /// The path being registered.
        path: String,
        /// The reference that is not valid.
        reference: String,
    },
    /// A path to import without a trusted signature (Nix's text).
    #[error("cannot add path '{0}' because it lacks a signature by a trusted key")]
    Unsigned(String),
    /// An imported NAR whose hash or size is not the one announced (Nix's text).
    #[error(
        "{what} mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}"
    )]
    ImportMismatch {
        /// `hash` or `size`.
        what: &'static str,
        /// The path.
        path: String,
        /// What the sender announced.
        specified: String,
        /// What arrived.
        got: String,
    },
    /// A path registered as built by a derivation that does not compute it.
    #[error(
        "cannot register '{path}' as built by '{drv}': it is not one of that derivation's outputs"
    )]
    NotAnOutput {
        /// The path.
        path: String,
        /// The derivation named as its deriver.
        drv: String,
    },
    /// A content address that hermetic cannot read.
    #[error("cannot add path '{path}': its content address '{ca}' is not one Nix writes")]
    BadContentAddress {
        /// The path.
        path: String,
        /// The content address.
        ca: String,
    },
    /// A content address that names another path than the one it comes with.
    #[error("cannot add path '{path}': its content address '{ca}' gives the path '{named}'")]
    ContentAddressNamesAnotherPath {
        /// The path.
        path: String,
        /// The content address.
        ca: String,
        /// The path the address gives.
        named: String,
    },
    /// A content hash could not be computed.
    #[error(transparent)]
    ContentHash(#[from] crate::content_address::ContentHashError),
    /// A NAR could not be written or read.
    #[error(transparent)]
    Nar(#[from] NarError),
    /// A derivation did not parse.
    #[error("cannot read derivation '{path}'")]
    DrvParse {
        /// The derivation.
        path: String,
        /// Why.
        #[source]
        source: DrvParseError,
    },
    /// A derivation did not hold together.
    #[error(transparent)]
    DrvCheck(#[from] DrvCheckError),
    /// A path to delete that other valid paths still refer to (Nix's
    /// text).
    #[error("cannot delete path '{path}' because it is in use by {users}")]
    PathInUse {
        /// The path.
        path: String,
        /// The paths that refer to it, quoted, comma-separated.
        users: String,
    },
    /// A path to delete that a root keeps alive (Nix's text).
    #[error(
        "Cannot delete path '{0}' since it is still alive. To find out why, use: nix-store --query --roots"
    )]
    StillAlive(String),
    /// A permanent root asked for inside the store directory (Nix's text).
    #[error(
        "creating a garbage collector root ({0}) in the Nix store is forbidden (are you running nix-build inside the store?)"
    )]
    RootInStore(PathBuf),
    /// A permanent root whose place holds something that is not a link
    /// into the store (Nix's text).
    #[error("cannot create symlink '{0}'; already exists")]
    RootInTheWay(PathBuf),
}

/// Wraps an `io::Error` with its operation and path.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}
