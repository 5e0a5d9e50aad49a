//! `builtin:fetchurl`: a fixed-output download, as Nix's builtin makes it
//! (`<nix/fetchurl.nix>`): the `url` written to `out`, or with `unpack =
//! "1"` read as a NAR (xz-compressed when the URL ends in `.xz`) and
//! restored at `out`; `executable = "1"` makes the result executable.
//! Hashed mirrors are tried first for a flat output. TLS certificates are
//! not checked, as in Nix: the build checks the output's hash.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hermetic_store::transfer::{self, TransferError, TransferOptions};

/// Why the download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchurlError {
    /// An attribute the builder needs is missing (Nix's text).
    #[error("attribute '{0}' missing")]
    MissingAttr(&'static str),
    /// The download failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The download broke off.
    #[error("unable to download '{0}': {1}")]
    Read(String, std::io::Error),
    /// Writing the output failed.
    #[error("{0} '{1}': {2}")]
    Io(&'static str, PathBuf, std::io::Error),
    /// The download is not a NAR that can be unpacked.
    #[error("unpacking '{0}': {1}")]
    Unpack(String, String),
}

/// Downloads what the environment (`get`) describes; `hashed_mirrors` are
/// the `hashed-mirrors` setting, `netrc_file` the credentials for HTTP
/// hosts.
pub fn run(
    get: &dyn Fn(&'static str) -> Option<String>,
    hashed_mirrors: &[String],
    netrc_file: Option<PathBuf>,
) -> Result<(), FetchurlError> {
    let attr = |name: &'static str| get(name).ok_or(FetchurlError::MissingAttr(name));
    let out = PathBuf::from(attr("out")?);
    let url = attr("url")?;
    let unpack = get("unpack").as_deref() == Some("1");
    let executable = get("executable").as_deref() == Some("1");
    let options = TransferOptions {
        verify_tls: false,
        netrc_file,
        ..TransferOptions::default()
    };
    let fetch = |from: &str| fetch(from, &url, &out, unpack, executable, &options);
    if attr("outputHashMode")? == "flat" {
        let algo = attr("outputHashAlgo")?;
        let hash = attr("outputHash")?;
        if let Some(name) = mirror_name(&algo, &hash) {
            for mirror in hashed_mirrors {
                let slash = if mirror.ends_with('/') { "" } else { "/" };
                match fetch(&format!("{mirror}{slash}{name}")) {
                    Ok(()) => return Ok(()),
                    Err(error) => {
                        tracing::debug!(%error, "hashed mirror failed");
                        clear(&out);
                    }
                }
            }
        }
    }
    fetch(&url)
}

/// Downloads `from` into `out`. Whether it is unpacked, and decompressed
/// first, is decided by the derivation's own `url`, as in Nix.
fn fetch(
    from: &str,
    url: &str,
    out: &Path,
    unpack: bool,
    executable: bool,
    options: &TransferOptions,
) -> Result<(), FetchurlError> {
    let source = transfer::open(from, options)?;
    if unpack {
        let method = if url.ends_with(".xz") { "xz" } else { "none" };
        let source = hermetic_store::compression::decompressor(method, source)
            .map_err(|e| FetchurlError::Unpack(from.to_owned(), e.to_string()))?;
        hermetic_store::nar::parse(
            source,
            &mut hermetic_store::nar::RestoreSink::new(out.to_owned()),
        )
        .map_err(|e| FetchurlError::Unpack(from.to_owned(), e.to_string()))?;
    } else {
        write_file(source, from, out)?;
    }
    if executable {
        fs::set_permissions(out, fs::Permissions::from_mode(0o755))
            .map_err(|e| FetchurlError::Io("making executable", out.to_owned(), e))?;
    }
    Ok(())
}

fn write_file(
    mut source: Box<dyn Read + Send>,
    from: &str,
    out: &Path,
) -> Result<(), FetchurlError> {
    let mut file =
        fs::File::create(out).map_err(|e| FetchurlError::Io("creating", out.to_owned(), e))?;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(FetchurlError::Read(from.to_owned(), error)),
        };
        file.write_all(&buffer[..n])
            .map_err(|e| FetchurlError::Io("writing", out.to_owned(), e))?;
    }
}

/// What a failed mirror left behind goes before the next try.
fn clear(out: &Path) {
    match fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => drop(fs::remove_dir_all(out)),
        Ok(_) => drop(fs::remove_file(out)),
        Err(_) => {}
    }
}

/// `<algo>/<hex digest>`, a hashed mirror's name for a flat file, from
/// the derivation's `outputHashAlgo` and `outputHash` (any of Nix's
/// encodings, SRI included).
fn mirror_name(algo: &str, hash: &str) -> Option<String> {
    let algo = hermetic_store::HashAlgo::from_name(algo);
    let hash = hermetic_store::Hash::parse(hash, algo).ok()?;
    Some(format!("{}/{}", hash.algo().name(), hash.to_hex()))
}
