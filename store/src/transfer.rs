//! Downloads, as Nix's file transfer makes them: a URL (`file://`,
//! `http://`, `https://`) opened as a stream of its bytes, never held
//! whole in memory, and failures in Nix's words. `builtin:fetchurl` reads
//! through it; binary caches will.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::netrc::Netrc;

/// What a download could not do.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The server answered with an HTTP error status (Nix's text).
    #[error("unable to download '{url}': HTTP error {status} ('{reason}')")]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The status's reason phrase.
        reason: String,
    },
    /// A `file://` URL whose file cannot be read.
    #[error("unable to download '{url}': {error}")]
    File {
        /// The URL.
        url: String,
        /// Why the file could not be opened.
        error: std::io::Error,
    },
    /// No connection, a broken one, or a URL the client cannot use.
    #[error("unable to download '{url}': {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A scheme hermetic does not download from.
    #[error("unable to download '{0}': unsupported URL scheme")]
    Unsupported(String),
}

impl TransferError {
    /// Whether the thing downloaded is certainly not there (HTTP 404 or 410,
    /// a missing file), as opposed to a failure that may pass.
    pub fn is_not_found(&self) -> bool {
        match self {
            TransferError::Http { status, .. } => matches!(status, 404 | 410),
            TransferError::File { error, .. } => error.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// How a download is made.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Whether a TLS server's certificate is checked. `builtin:fetchurl`
    /// does not (the output's hash is checked instead), as in Nix.
    pub verify_tls: bool,
    /// How long a connection may take to open (`connect-timeout`; `None`
    /// leaves it to the system).
    pub connect_timeout: Option<Duration>,
    /// How long a download may go without receiving anything
    /// (`stalled-download-timeout`).
    pub stalled_timeout: Option<Duration>,
    /// The netrc file whose credentials are sent to HTTP hosts
    /// (`netrc-file`; a missing file sends none).
    pub netrc_file: Option<PathBuf>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            verify_tls: true,
            connect_timeout: None,
            stalled_timeout: Some(Duration::from_secs(300)),
            netrc_file: None,
        }
    }
}

impl TransferOptions {
    /// Nix's reading of the timeout settings: seconds, 0 for none.
    pub fn with_timeouts(mut self, connect_secs: u64, stalled_secs: u64) -> Self {
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        self.connect_timeout = secs(connect_secs);
        self.stalled_timeout = secs(stalled_secs);
        self
    }
}

/// Makes downloads with one set of options, reusing HTTP connections
/// between them.
#[derive(Debug, Clone)]
pub struct Downloader {
    agent: ureq::Agent,
    netrc: Arc<Netrc>,
}

impl Downloader {
    /// A downloader making downloads as `options` say.
    pub fn new(options: &TransferOptions) -> Downloader {
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(!options.verify_tls)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(options.connect_timeout)
            .timeout_per_read(options.stalled_timeout)
            .build()
            .into();
        let netrc = options
            .netrc_file
            .as_deref()
            .map(Netrc::read)
            .unwrap_or_default();
        Downloader {
            agent,
            netrc: Arc::new(netrc),
        }
    }

    /// Opens `url` for reading: its bytes as they arrive, undecompressed.
    /// Proxies come from the usual variables (`http_proxy`, `https_proxy`,
    /// `all_proxy`, `no_proxy`), as curl reads them for Nix; the netrc
    /// file's login for the URL's host is sent with HTTP basic
    /// authentication.
    pub fn open(&self, url: &str) -> Result<Box<dyn Read + Send>, TransferError> {
        open_with(&self.agent, &self.netrc, url)
    }
}

/// Opens `url` for reading with a downloader of its own (see
/// [`Downloader::open`]).
pub fn open(url: &str, options: &TransferOptions) -> Result<Box<dyn Read + Send>, TransferError> {
    Downloader::new(options).open(url)
}

/// The host of an `http(s)://` URL, without user information or port.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    }
}

fn open_with(
    agent: &ureq::Agent,
    netrc: &Netrc,
    url: &str,
) -> Result<Box<dyn Read + Send>, TransferError> {
    if let Some(path) = url.strip_prefix("file://") {
        // curl decodes a file URL's `%XX` escapes.
        use std::os::unix::ffi::OsStrExt;
        let path: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
        return std::fs::File::open(std::ffi::OsStr::from_bytes(&path))
            .map(|file| Box::new(file) as Box<dyn Read + Send>)
            .map_err(|error| TransferError::File {
                url: url.to_owned(),
                error,
            });
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(TransferError::Unsupported(url.to_owned()));
    }
    let transport = |error: ureq::Error| TransferError::Transport {
        url: url.to_owned(),
        reason: error.to_string(),
    };
    let mut request = agent.get(url);
    if let Some((login, password)) = netrc.credentials(host_of(url)) {
        let token = crate::hash::encode_base64(format!("{login}:{password}").as_bytes());
        request = request.header("Authorization", format!("Basic {token}"));
    }
    let response = request.call().map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(TransferError::Http {
            url: url.to_owned(),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_owned(),
        });
    }
    Ok(Box::new(response.into_body().into_reader()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_a_url_is_without_user_port_or_path() {
        assert_eq!(host_of("http://127.0.0.1:8080/x.narinfo"), "127.0.0.1");
        assert_eq!(host_of("https://u:p@cache.org/nar/a?b"), "cache.org");
        assert_eq!(host_of("http://[::1]:80/"), "::1");
        assert_eq!(host_of("https://cache.org"), "cache.org");
    }

    #[test]
    fn file_urls_are_read_where_they_point_and_a_missing_one_is_not_found() {
        let dir = std::env::temp_dir().join(format!("hermetic-transfer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a b");
        std::fs::write(&file, "contents").unwrap();
        let url = format!("file://{}/a%20b", dir.display());
        let mut text = String::new();
        open(&url, &TransferOptions::default())
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "contents");
        let missing = format!("file://{}/nothing", dir.display());
        let error = open(&missing, &TransferOptions::default()).err().unwrap();
        assert!(error.is_not_found());
        assert!(
            error
                .to_string()
                .starts_with(&format!("unable to download '{missing}': ")),
            "{error}"
        );
        let ftp = open("ftp://example.org/x", &TransferOptions::default())
            .err()
            .unwrap();
        assert_eq!(
            ftp.to_string(),
            "unable to download 'ftp://example.org/x': unsupported URL scheme"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
