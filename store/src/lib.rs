//! Nix's formats and the local store: derivations (ATerm and JSON), store
//! paths as Nix computes them, the NAR serialisation, and a local store
//! whose registry of valid paths is Nix's own SQLite database, so that
//! hermetic and Nix can work on one store.

pub mod base32;
pub mod derivation;
pub mod hash;
pub mod nar;
pub mod path;

pub use derivation::{Derivation, DerivationOutput};
pub use hash::{Hash, HashAlgo};
pub use path::{IngestionMethod, StoreDir, StorePath};
