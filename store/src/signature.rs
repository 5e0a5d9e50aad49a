//! Signatures on store paths, as Nix makes and checks them: an Ed25519
//! signature, `name:base64`, over the fingerprint
//! `1;<path>;<nar hash in base32>;<nar size>;<references, comma-separated>`,
//! by a key named in `trusted-public-keys` (`name:base64 of 32 bytes`).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::db::PathInfo;
use crate::hash::{Hash, HashAlgo};
use crate::path::StoreDir;

/// A trusted public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64`; `None` when it is not a key.
    pub fn parse(text: &str) -> Option<PublicKey> {
        let (name, encoded) = text.split_once(':')?;
        let bytes: [u8; 32] = crate::hash::decode_base64(encoded)?.try_into().ok()?;
        Some(PublicKey {
            name: name.to_owned(),
            key: VerifyingKey::from_bytes(&bytes).ok()?,
        })
    }
}

/// A secret key that signs paths (`secret-key-files`): `name:base64 of
/// 64 bytes`, the Ed25519 seed and public key, as
/// `nix-store --generate-binary-cache-key` writes it.
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses a secret key file's text; `None` when it is not a key.
    pub fn parse(text: &str) -> Option<SecretKey> {
        let (name, encoded) = text.trim().split_once(':')?;
        let bytes: [u8; 64] = crate::hash::decode_base64(encoded)?.try_into().ok()?;
        Some(SecretKey {
            name: name.to_owned(),
            key: SigningKey::from_keypair_bytes(&bytes).ok()?,
        })
    }

    /// The signature of `info` by this key, as Nix writes it
    /// (`name:base64`).
    pub fn sign(&self, store: &StoreDir, info: &PathInfo) -> String {
        let signature = self.key.sign(fingerprint(store, info).as_bytes());
        let sri = Hash::new(HashAlgo::Sha512, signature.to_bytes().to_vec())
            .expect("a signature is 64 bytes")
            .to_sri();
        format!("{}:{}", self.name, sri.trim_start_matches("sha512-"))
    }
}

/// Why the keys of `secret-key-files` could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// A key file that cannot be read.
    #[error("cannot read the secret key '{file}'")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a key.
    #[error(
        "the file '{0}' in 'secret-key-files' is not a secret key (make one with 'nix-store --generate-binary-cache-key')"
    )]
    NotAKey(String),
}

/// The keys of `files` (`secret-key-files`), each read and parsed; any
/// that fails is an error, so that nothing is left unsigned unnoticed.
pub fn read_secret_keys(files: &[String]) -> Result<Vec<SecretKey>, SecretKeyError> {
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|source| SecretKeyError::Read {
                file: file.clone(),
                source,
            })?;
            SecretKey::parse(&text).ok_or_else(|| SecretKeyError::NotAKey(file.clone()))
        })
        .collect()
}

/// What a signature is made over.
pub fn fingerprint(store: &StoreDir, info: &PathInfo) -> String {
    let refs: Vec<String> = info.references.iter().map(|r| store.print(r)).collect();
    format!(
        "1;{};{};{};{}",
        store.print(&info.path),
        info.nar_hash.to_prefixed_base32(),
        info.nar_size,
        refs.join(",")
    )
}

/// Whether one of `info`'s signatures is valid by one of `keys`.
pub fn signed_by_trusted_key(store: &StoreDir, info: &PathInfo, keys: &[PublicKey]) -> bool {
    let message = fingerprint(store, info);
    info.sigs.iter().any(|sig| {
        let Some((name, encoded)) = sig.split_once(':') else {
            return false;
        };
        let Some(bytes) =
            crate::hash::decode_base64(encoded).and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        let signature = Signature::from_bytes(&bytes);
        keys.iter()
            .filter(|k| k.name == name)
            .any(|k| k.key.verify(message.as_bytes(), &signature).is_ok())
    })
}

/// Whether `info`'s content address (`ca`) names its own path: such a
/// path needs no signature (its content is checked against the address
/// when it is imported).
pub fn names_own_path(store: &StoreDir, info: &PathInfo) -> bool {
    info.ca
        .as_deref()
        .and_then(crate::ContentAddress::parse)
        .and_then(|ca| {
            ca.store_path(store, info.path.name(), &info.references, &info.path)
                .ok()
        })
        .is_some_and(|named| named == info.path)
}

/// Whether a path from elsewhere with `info` must be refused: keys are
/// required (`None`: `require-sigs` is off), and it is neither
/// content-addressed nor signed by one of them.
pub fn is_untrusted(store: &StoreDir, info: &PathInfo, trusted_keys: Option<&[PublicKey]>) -> bool {
    trusted_keys.is_some_and(|keys| {
        !names_own_path(store, info) && !signed_by_trusted_key(store, info, keys)
    })
}

/// The keys a path from elsewhere must be signed by: those of
/// `trusted-public-keys` that parse, or `None` when `require-sigs` is off
/// and no signature is needed.
pub fn required_keys(require_sigs: bool, trusted_public_keys: &[String]) -> Option<Vec<PublicKey>> {
    require_sigs.then(|| {
        trusted_public_keys
            .iter()
            .filter_map(|k| PublicKey::parse(k))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_bad_ones_do_not() {
        assert!(
            PublicKey::parse("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
                .is_some()
        );
        assert!(PublicKey::parse("no-colon").is_none());
        assert!(PublicKey::parse("short:AAAA").is_none());
    }
}
