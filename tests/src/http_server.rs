//! A small HTTP/1.1 server on a loopback port, serving a directory's
//! files, for binary caches over HTTP. Each path can be made to fail the
//! way real servers fail: an error status, no answer at all, a body that
//! never ends, a body cut short; or it can ask for a login.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers a request for one path instead of serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This status, with an empty body.
    Status(u16),
    /// Nothing: the connection stays open and silent for ten minutes.
    Stall,
    /// A 200 whose body, with no length, never ends.
    Endless,
    /// The file's length announced, and only its first `n` bytes sent.
    Truncate(usize),
}

struct Shared {
    root: PathBuf,
    faults: Mutex<HashMap<String, Fault>>,
    requests: Mutex<Vec<String>>,
    /// The `Authorization` header every request must carry, if any.
    login: Mutex<Option<String>>,
    stop: AtomicBool,
    open: AtomicUsize,
}

/// A running server; stopped when dropped.
pub struct HttpServer {
    port: u16,
    shared: Arc<Shared>,
}

impl HttpServer {
    /// Serves the files under `root` on a free port of 127.0.0.1.
    pub fn serve(root: &Path) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            faults: Mutex::default(),
            requests: Mutex::default(),
            login: Mutex::default(),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || {
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let _ = answer(&shared, stream);
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        HttpServer { port, shared }
    }

    /// The URL of `path` (no leading slash) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Makes requests for `path` (no leading slash; a `/` at the end matches
    /// every path under it) fail with `fault`.
    pub fn fault(&self, path: &str, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .insert(path.to_owned(), fault);
    }

    /// Serves every path again.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Answers 401 to every request without HTTP basic authentication as
    /// `user` with `password`.
    pub fn require_login(&self, user: &str, password: &str) {
        let token = hermetic_store::hash::encode_base64(format!("{user}:{password}").as_bytes());
        *self.shared.login.lock().unwrap() = Some(format!("Basic {token}"));
    }

    /// The paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(shared: &Shared, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Headers and body go in separate writes: without this, Nagle's
    // algorithm and the client's delayed ACK hold each response ~40 ms.
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut authorization = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = Some(value.trim().to_owned());
                }
            }
        }
        let path = request
            .split(' ')
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned();
        shared.requests.lock().unwrap().push(path.clone());
        let fault = {
            let faults = shared.faults.lock().unwrap();
            faults.get(&path).copied().or_else(|| {
                faults
                    .iter()
                    .find(|(prefix, _)| prefix.ends_with('/') && path.starts_with(prefix.as_str()))
                    .map(|(_, f)| *f)
            })
        };
        let file = shared.root.join(&path);
        let login = shared.login.lock().unwrap().clone();
        if login.is_some() && authorization != login {
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cache\"\r\nContent-Length: 0\r\n\r\n"
            )?;
            stream.flush()?;
            continue;
        }
        match fault {
            Some(Fault::Status(status)) => {
                write!(
                    stream,
                    "HTTP/1.1 {status} Failure\r\nContent-Length: 0\r\n\r\n"
                )?;
            }
            Some(Fault::Stall) => {
                for _ in 0..600 {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                return Ok(());
            }
            Some(Fault::Endless) => {
                write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                let block = [b'x'; 65536];
                while !shared.stop.load(Ordering::SeqCst) {
                    stream.write_all(&block)?;
                }
                return Ok(());
            }
            Some(Fault::Truncate(n)) => {
                let body = std::fs::read(&file)?;
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )?;
                stream.write_all(&body[..n.min(body.len())])?;
                return Ok(());
            }
            None => match std::fs::File::open(&file) {
                Ok(mut body) if file.is_file() => {
                    let len = body.metadata()?.len();
                    write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")?;
                    std::io::copy(&mut (&mut body).take(len), &mut stream)?;
                }
                _ => write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                )?,
            },
        }
        stream.flush()?;
    }
}
