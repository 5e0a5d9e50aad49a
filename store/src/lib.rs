//! Nix's formats and the local store: derivations (ATerm and JSON), store
//! paths as Nix computes them, the NAR serialisation, and a local store
//! whose registry of valid paths is Nix's own SQLite database, so that
//! hermetic and Nix can work on one store.

pub mod base32;
pub mod binary_cache;
pub mod cache_writer;
pub mod canonical;
pub mod compression;
pub mod content_address;
pub mod db;
pub mod derivation;
pub mod error;
pub mod hash;
pub mod layout;
pub mod local;
pub mod lock;
pub mod nar;
pub mod narinfo_cache;
pub mod netrc;
pub mod path;
pub mod pending;
pub mod signature;
pub mod substituters;
pub mod temp_roots;
pub mod transfer;
pub mod tree;
pub mod unix_socket;

pub use content_address::ContentAddress;
pub use db::PathInfo;
pub use derivation::{Derivation, DerivationOutput};
pub use error::StoreError;
pub use hash::{Hash, HashAlgo};
pub use layout::StoreLayout;
pub use local::{LocalStore, VerifyReport, error_chain};
pub use path::{IngestionMethod, StoreDir, StorePath};
