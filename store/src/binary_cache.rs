//! Binary caches in Nix's layout (`file://DIR`, `http://…`, `https://…`):
//! `nix-cache-info` (`StoreDir`, `WantMassQuery`, `Priority`), one
//! `<hash>.narinfo` per path, and its NAR under the narinfo's `URL`,
//! compressed by its `Compression`. A path is fetched by streaming its
//! NAR through decompression into [`LocalStore::import_nar`], which
//! checks the signature, the NAR's hash and size and a content address,
//! under the store's crash-safe pending records: nothing is held whole in
//! memory, nothing half-written is registered. Several caches in priority
//! order, and whole closures, are [`crate::substituters`]'s.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;

use crate::compression::decompressor;
use crate::hash::Hash;
use crate::local::LocalStore;
use crate::narinfo_cache::{NarInfoDiskCache, Remembered};
use crate::path::{StoreDir, StorePath};
use crate::signature::PublicKey;
use crate::transfer::{Downloader, TransferError, TransferOptions};
use crate::{PathInfo, StoreError};

/// What a binary cache says of itself (`nix-cache-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// The store directory its paths are for.
    pub store_dir: String,
    /// Whether it wants to be asked about many paths at once.
    pub want_mass_query: bool,
    /// Its priority: lower is tried first (Nix's default 50).
    pub priority: i64,
}

impl CacheInfo {
    /// Parses `nix-cache-info`; lines without a colon and unknown keys are
    /// skipped, as Nix skips them.
    pub fn parse(text: &str) -> CacheInfo {
        let mut info = CacheInfo {
            store_dir: String::new(),
            want_mass_query: false,
            priority: 50,
        };
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name {
                "StoreDir" => info.store_dir = value.to_owned(),
                "WantMassQuery" => info.want_mass_query = value == "1",
                "Priority" => info.priority = value.parse().unwrap_or(info.priority),
                _ => {}
            }
        }
        info
    }
}

/// One path's entry in a binary cache (`<hash>.narinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The path, its NAR's hash and size, references, deriver, content
    /// address and signatures: what gets registered.
    pub info: PathInfo,
    /// Where its (compressed) NAR is, relative to the cache.
    pub url: String,
    /// How the NAR is compressed (`bzip2` when the file does not say).
    pub compression: String,
    /// The size of the (compressed) file to download, when known.
    pub file_size: Option<u64>,
}

/// Why a narinfo could not be read (Nix's text, naming where it came from).
#[derive(Debug, thiserror::Error)]
#[error("NAR info file '{0}' is corrupt")]
pub struct CorruptNarInfo(pub String);

impl NarInfo {
    /// Parses the narinfo `text` of a cache for `store_dir`; `whence` names
    /// it in errors. Every line is `Name: value`; `StorePath`, `URL`,
    /// `NarHash` and a non-zero `NarSize` are required.
    pub fn parse(
        store_dir: &StoreDir,
        text: &str,
        whence: &str,
    ) -> Result<NarInfo, CorruptNarInfo> {
        let corrupt = || CorruptNarInfo(whence.to_owned());
        let base_name = |name: &str| StorePath::from_base_name(name).map_err(|_| corrupt());
        let mut path = None;
        let mut nar_hash = None;
        let mut nar_size = 0;
        let mut url = String::new();
        let mut compression = String::new();
        let mut file_size = None;
        let mut references = BTreeSet::new();
        let mut deriver = None;
        let mut ca = None;
        let mut sigs = Vec::new();
        for line in text.split_inclusive('\n') {
            let line = line.strip_suffix('\n').ok_or_else(corrupt)?;
            let (name, value) = line.split_once(": ").ok_or_else(corrupt)?;
            match name {
                "StorePath" => path = Some(store_dir.parse(value).map_err(|_| corrupt())?),
                "URL" => url = value.to_owned(),
                "Compression" => compression = value.to_owned(),
                "NarHash" => nar_hash = Some(Hash::parse(value, None).map_err(|_| corrupt())?),
                "NarSize" => nar_size = value.parse().map_err(|_| corrupt())?,
                "FileSize" => file_size = value.parse().ok(),
                "References" => {
                    // A second list is corrupt, as in Nix, unless the
                    // first was empty.
                    if !references.is_empty() {
                        return Err(corrupt());
                    }
                    for name in value.split(' ').filter(|n| !n.is_empty()) {
                        references.insert(base_name(name)?);
                    }
                }
                "Deriver" if value != "unknown-deriver" => deriver = Some(base_name(value)?),
                "Sig" if !sigs.iter().any(|s| s == value) => sigs.push(value.to_owned()),
                "CA" => {
                    if ca.is_some() {
                        return Err(corrupt());
                    }
                    ca = Some(value.to_owned());
                }
                // FileHash, System and anything newer: not needed
                // to fetch and check the NAR.
                _ => {}
            }
        }
        let (Some(path), Some(nar_hash)) = (path, nar_hash) else {
            return Err(corrupt());
        };
        if url.is_empty() || nar_size == 0 {
            return Err(corrupt());
        }
        if compression.is_empty() {
            compression = "bzip2".to_owned();
        }
        Ok(NarInfo {
            info: PathInfo {
                path,
                nar_hash,
                nar_size,
                references,
                deriver,
                registration_time: 0,
                ca,
                sigs,
                ultimate: false,
            },
            url,
            compression,
            file_size,
        })
    }
}

impl NarInfo {
    /// The narinfo's text, in the order Nix writes it; `file_hash` is the
    /// compressed file's hash, when known.
    pub fn to_text(&self, store_dir: &StoreDir, file_hash: Option<&Hash>) -> String {
        let info = &self.info;
        let mut text = format!(
            "StorePath: {}\nURL: {}\nCompression: {}\n",
            store_dir.print(&info.path),
            self.url,
            self.compression
        );
        if let Some(hash) = file_hash {
            text.push_str(&format!("FileHash: {}\n", hash.to_prefixed_base32()));
        }
        if let Some(size) = self.file_size {
            text.push_str(&format!("FileSize: {size}\n"));
        }
        let references: Vec<String> = info.references.iter().map(|r| r.to_string()).collect();
        text.push_str(&format!(
            "NarHash: {}\nNarSize: {}\nReferences: {}\n",
            info.nar_hash.to_prefixed_base32(),
            info.nar_size,
            references.join(" ")
        ));
        if let Some(deriver) = &info.deriver {
            text.push_str(&format!("Deriver: {deriver}\n"));
        }
        for sig in &info.sigs {
            text.push_str(&format!("Sig: {sig}\n"));
        }
        if let Some(ca) = &info.ca {
            text.push_str(&format!("CA: {ca}\n"));
        }
        text
    }
}

/// What substitution from a cache could not do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A download failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The cache is for another store directory (Nix's text).
    #[error("binary cache '{url}' is for Nix stores with prefix '{theirs}', not '{ours}'")]
    WrongStoreDir {
        /// The cache.
        url: String,
        /// Its store directory.
        theirs: String,
        /// This store's.
        ours: String,
    },
    /// A path the cache does not have.
    #[error("path '{path}' is not available in binary cache '{url}'")]
    Missing {
        /// The cache.
        url: String,
        /// The path.
        path: String,
    },
    /// A narinfo that cannot be read.
    #[error(transparent)]
    Corrupt(#[from] CorruptNarInfo),
    /// A URL parameter whose value cannot be used.
    #[error("binary cache '{url}': invalid value '{value}' for parameter '{name}'")]
    BadParameter {
        /// The cache.
        url: String,
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
    },
    /// A narinfo for another path than the one asked for.
    #[error("binary cache '{url}' answered for '{asked}' with the NAR info of '{got}'")]
    OtherPath {
        /// The cache.
        url: String,
        /// The path asked for.
        asked: String,
        /// The path its narinfo names.
        got: String,
    },
    /// Reading a cache file failed midway.
    #[error("reading '{url}'")]
    Read {
        /// The file's URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The NAR names a compression hermetic cannot undo.
    #[error(transparent)]
    Compression(#[from] crate::compression::UnknownCompression),
    /// The store refused the path (signature, hash, size, content
    /// address, missing references).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A binary cache, opened: its URL and what it says of itself.
#[derive(Debug, Clone)]
pub struct BinaryCache {
    /// Its URL, without a trailing slash or parameters.
    pub url: String,
    /// Its `nix-cache-info` (`priority` and `want-mass-query` parameters
    /// of the URL win over it, as in Nix).
    pub info: CacheInfo,
    /// The store directory its paths are in: the URL's `store` parameter,
    /// else the local store's.
    pub store_dir: StoreDir,
    downloader: Downloader,
    /// Where an HTTP cache's answers are kept between runs.
    disk: Option<Arc<NarInfoDiskCache>>,
}

impl BinaryCache {
    /// Opens the cache at `url` (with Nix's parameters after `?`: `store`,
    /// `priority`, `want-mass-query`) for a store whose directory is
    /// `local`: reads its `nix-cache-info` (a cache without one is taken to
    /// be for its store directory, as Nix writes one then) and checks its
    /// store directory. Downloads from it are made as `options` say. An
    /// HTTP cache's answers are kept in `disk`, and taken from it while
    /// they are fresh (Nix keeps those of no other kind of cache).
    pub fn open(
        url: &str,
        local: &StoreDir,
        options: &TransferOptions,
        disk: Option<&Arc<NarInfoDiskCache>>,
    ) -> Result<BinaryCache, CacheError> {
        let (url, params) = url.split_once('?').unwrap_or((url, ""));
        let url = url.trim_end_matches('/').to_owned();
        let mut store_dir = local.clone();
        let (mut priority, mut mass_query) = (None, None);
        for (name, value) in params.split('&').filter_map(|p| p.split_once('=')) {
            match name {
                "store" => {
                    store_dir = StoreDir::new(value).ok_or_else(|| CacheError::BadParameter {
                        url: url.clone(),
                        name: name.to_owned(),
                        value: value.to_owned(),
                    })?
                }
                "priority" => priority = value.parse().ok(),
                "want-mass-query" => mass_query = Some(value == "true" || value == "1"),
                // Parameters for writing (compression, secret-key, …).
                _ => {}
            }
        }
        let downloader = Downloader::new(options);
        let is_http = url.starts_with("http://") || url.starts_with("https://");
        let disk = disk.filter(|_| is_http).cloned();
        let remembered = disk.as_ref().and_then(|d| d.cache_info(&url));
        let mut info = match remembered {
            Some(info) => info,
            None => {
                let info = match read_text(&format!("{url}/nix-cache-info"), &downloader) {
                    Ok(text) => CacheInfo::parse(&text),
                    Err(CacheError::Transfer(e)) if e.is_not_found() => CacheInfo {
                        store_dir: store_dir.as_str().to_owned(),
                        want_mass_query: false,
                        priority: 50,
                    },
                    Err(e) => return Err(e),
                };
                if let Some(disk) = &disk {
                    disk.remember_cache_info(&url, &info);
                }
                info
            }
        };
        if info.store_dir != store_dir.as_str() {
            return Err(CacheError::WrongStoreDir {
                url,
                theirs: info.store_dir,
                ours: store_dir.as_str().to_owned(),
            });
        }
        info.priority = priority.unwrap_or(info.priority);
        info.want_mass_query = mass_query.unwrap_or(info.want_mass_query);
        Ok(BinaryCache {
            url,
            info,
            store_dir,
            downloader,
            disk,
        })
    }

    /// The cache's narinfo for `path` (of its store directory), or `None`
    /// when it does not have it; from the disk cache while it knows.
    pub fn query(&self, path: &StorePath) -> Result<Option<NarInfo>, CacheError> {
        let store_dir = &self.store_dir;
        let hash_part = path.hash_part();
        let file = format!("{}/{hash_part}.narinfo", self.url);
        let disk = self.disk.as_deref();
        let (text, fresh) = match disk.and_then(|d| d.narinfo(&self.url, hash_part)) {
            Some(Remembered::Present(text)) => (text, false),
            Some(Remembered::Absent) => return Ok(None),
            None => match read_text(&file, &self.downloader) {
                Ok(text) => (text, true),
                Err(CacheError::Transfer(e)) if e.is_not_found() => {
                    if let Some(disk) = disk {
                        disk.remember_narinfo(&self.url, hash_part, None);
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            },
        };
        let narinfo = NarInfo::parse(store_dir, &text, &file)?;
        if narinfo.info.path != *path {
            return Err(CacheError::OtherPath {
                url: self.url.clone(),
                asked: store_dir.print(path),
                got: store_dir.print(&narinfo.info.path),
            });
        }
        // Only a narinfo that reads is kept.
        if let (Some(disk), true) = (disk, fresh) {
            disk.remember_narinfo(&self.url, hash_part, Some(&text));
        }
        Ok(Some(narinfo))
    }

    /// Fetches the NAR of `narinfo` and adds the path to `store`, its
    /// signature checked against `trusted_keys` (`None`: `require-sigs`
    /// is off). Its references must already be valid.
    pub fn fetch(
        &self,
        store: &mut LocalStore,
        narinfo: &NarInfo,
        trusted_keys: Option<&[PublicKey]>,
    ) -> Result<(), CacheError> {
        let url = format!("{}/{}", self.url, narinfo.url);
        let download = self.downloader.open(&url)?;
        let nar = decompressor(&narinfo.compression, download)?;
        // A NAR longer than its narinfo says is refused as soon as it is,
        // not stored to the end (a server that never stops sending).
        let mut nar = AtMost {
            inner: nar,
            left: narinfo.info.nar_size,
            url,
        };
        store.import_nar(narinfo.info.clone(), &mut nar, trusted_keys)?;
        Ok(())
    }
}

/// A NAR being downloaded: fails once it gives more than `left` bytes,
/// and its errors (a broken connection, damaged compressed data) name
/// its URL.
struct AtMost<R> {
    inner: R,
    left: u64,
    url: String,
}

impl<R: Read> Read for AtMost<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading '{}': {e}", self.url)))?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(std::io::Error::other(format!(
                "the NAR at '{}' is longer than its narinfo's NarSize",
                self.url
            ))),
        }
    }
}

/// A small cache file's text.
fn read_text(url: &str, downloader: &Downloader) -> Result<String, CacheError> {
    let mut text = String::new();
    downloader
        .open(url)?
        // A narinfo or nix-cache-info is a few kilobytes; a server that
        // sends more is not a cache.
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|source| CacheError::Read {
            url: url.to_owned(),
            source,
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A narinfo as Nix 2.8's `nix copy --to file://…` writes it.
    const NARINFO: &str = "\
StorePath: /nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-hello
URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz
Compression: xz
FileHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3
FileSize: 412
NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73
NarSize: 1208
References: h6b6bz6y039rxr8wwm24akjsi596ksh7-b wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-hello
Deriver: y3hz0i1ffrqi1r63q39lw11jdw6vcpck-hello.drv
Sig: test-1:ZXhhbXBsZQ==
";

    #[test]
    fn a_narinfo_is_what_gets_registered() {
        let store = StoreDir::default();
        let narinfo = NarInfo::parse(&store, NARINFO, "x.narinfo").unwrap();
        assert_eq!(
            store.print(&narinfo.info.path),
            "/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-hello"
        );
        assert_eq!(narinfo.compression, "xz");
        assert_eq!(narinfo.info.nar_size, 1208);
        assert_eq!(
            narinfo.info.nar_hash.to_prefixed_base32(),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(narinfo.info.references.len(), 2);
        assert!(narinfo.info.references.contains(&narinfo.info.path));
        assert_eq!(
            narinfo.info.deriver.as_ref().map(|d| d.to_string()),
            Some("y3hz0i1ffrqi1r63q39lw11jdw6vcpck-hello.drv".to_owned())
        );
        assert_eq!(narinfo.info.sigs, ["test-1:ZXhhbXBsZQ=="]);
        // Without Compression, Nix takes bzip2; without a deriver, none.
        let bare: String = NARINFO
            .lines()
            .filter(|l| !l.starts_with("Compression") && !l.starts_with("Deriver"))
            .map(|l| format!("{l}\n"))
            .collect();
        let narinfo = NarInfo::parse(&store, &bare, "x.narinfo").unwrap();
        assert_eq!(narinfo.compression, "bzip2");
        assert_eq!(narinfo.info.deriver, None);
    }

    #[test]
    fn a_narinfo_written_reads_back_the_same() {
        let store = StoreDir::default();
        let narinfo = NarInfo::parse(&store, NARINFO, "x.narinfo").unwrap();
        let file_hash = Hash::parse(
            "sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3",
            None,
        )
        .unwrap();
        let text = narinfo.to_text(&store, Some(&file_hash));
        assert_eq!(text, NARINFO);
        assert_eq!(NarInfo::parse(&store, &text, "y.narinfo").unwrap(), narinfo);
    }

    #[test]
    fn a_corrupt_narinfo_is_refused_with_nix_text() {
        let store = StoreDir::default();
        let without = |field: &str| -> String {
            NARINFO
                .lines()
                .filter(|l| !l.starts_with(field))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        for broken in [
            without("StorePath"),
            without("URL"),
            without("NarHash"),
            without("NarSize"),
            NARINFO.replace("NarSize: 1208", "NarSize: many"),
            NARINFO.replace("NarHash: sha256:", "NarHash: sha257:"),
            NARINFO.trim_end().to_owned(),
            format!("{NARINFO}References: \n"),
            NARINFO.replace("/nix/store/", "/other/store/"),
        ] {
            let error = NarInfo::parse(&store, &broken, "c/x.narinfo").unwrap_err();
            assert_eq!(
                error.to_string(),
                "NAR info file 'c/x.narinfo' is corrupt",
                "{broken}"
            );
        }
    }

    #[test]
    fn cache_info_says_store_dir_priority_and_mass_query() {
        let info =
            CacheInfo::parse("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\nnonsense\n");
        assert_eq!(
            info,
            CacheInfo {
                store_dir: "/nix/store".into(),
                want_mass_query: true,
                priority: 30
            }
        );
        assert_eq!(CacheInfo::parse("StoreDir: /nix/store\n").priority, 50);
    }
}
