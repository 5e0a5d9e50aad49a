//! The daemon's life: a Unix socket (mode 0666; who may connect is the
//! trust model's business), a thread per client, SIGTERM and SIGINT to stop
//! accepting and end cleanly; or one client on stdin/stdout (`--stdio`).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hermetic_config::settings::Settings;
use hermetic_store::{LocalStore, StoreLayout};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::connection::{Client, Lifecycle, serve};
use crate::limits::{ConnectionCounter, ConnectionLimits, Entry, descriptor_limit};
use crate::protocol::SERVE_SESSION_MAGIC;
use crate::trust::Peer;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be made.
    #[error("cannot listen on '{path}'")]
    Listen {
        /// The socket's path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signals could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] nix::errno::Errno),
    /// The store could not be opened (it is opened once at start, which
    /// cleans what a killed daemon left).
    #[error("cannot open the store")]
    Store(#[source] hermetic_store::StoreError),
}

/// Serves clients on the socket at `socket` until SIGTERM or SIGINT.
pub fn run(layout: StoreLayout, settings: Settings, socket: &Path) -> Result<(), ServerError> {
    // Opening the store cleans what a killed daemon left half-done.
    LocalStore::open(layout.clone())
        .map_err(ServerError::Store)?
        .reserve_space(settings.gc_reserved_space);
    let listen_err = |source| ServerError::Listen {
        path: socket.display().to_string(),
        source,
    };
    // A socket the service manager made and passed (`hermetic-daemon.socket`,
    // as `nix-daemon.socket`) is used as it is; otherwise the daemon makes
    // its own.
    let activated = hermetic_sys::take_listen_fds().into_iter().next();
    let owns_socket = activated.is_none();
    let listener = match activated {
        Some(fd) => {
            let listener = std::os::unix::net::UnixListener::from(fd);
            listener.local_addr().map_err(listen_err)?;
            tracing::info!("using the socket the service manager passed");
            listener
        }
        None => {
            if let Some(dir) = socket.parent() {
                std::fs::create_dir_all(dir).map_err(listen_err)?;
            }
            match std::fs::remove_file(socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(listen_err(e)),
                _ => {}
            }
            let listener = hermetic_store::unix_socket::bind(socket).map_err(listen_err)?;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
                .map_err(listen_err)?;
            listener
        }
    };
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).map_err(ServerError::Signals)?;
    let stop = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(ServerError::Signals)?;
    // Readable once the daemon stops: every running build watches it.
    let (stop_r, stop_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ServerError::Signals)?;
    let counter = ConnectionCounter::new(ConnectionLimits::for_descriptors(descriptor_limit()));
    let limits = counter.limits();
    tracing::info!(
        socket = %socket.display(),
        per_user = limits.per_user,
        total = limits.total,
        "accepting connections"
    );
    // The clients' sockets, so that stopping can hang up on idle ones. Each
    // is removed when its client's thread ends, so that a connection closes
    // as soon as it is done.
    type Held = (std::os::unix::net::UnixStream, std::sync::Arc<Lifecycle>);
    let clients: std::sync::Mutex<std::collections::BTreeMap<u64, Held>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut next_client = 0u64;
    std::thread::scope(|scope| {
        loop {
            let mut fds = [
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waiting for clients: {e}");
                    break;
                }
                Ok(_) => {}
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                tracing::info!("stopping: no new clients; running builds end");
                break;
            }
            let (stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors: the client waits in the backlog
                    // until one is free, and the loop does not spin.
                    tracing::warn!("accepting a client: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            let peer = match Peer::of_socket(&stream) {
                Ok(peer) => peer,
                Err(e) => {
                    tracing::warn!("identifying a client: {e}");
                    continue;
                }
            };
            let (ticket, refused) = match counter.enter(peer.uid, &peer.user) {
                Entry::Serve(ticket) => (ticket, None),
                Entry::Refuse(ticket, why) => (ticket, Some(why)),
                Entry::HangUp(why) => {
                    tracing::warn!(user = %peer.user, "hung up on a client: {why}");
                    continue;
                }
            };
            // A client that stops reading makes writes to it fail after a
            // while, rather than hold up a build whose log it watches; one
            // that does not greet in time is hung up on.
            let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(60)));
            let _ = stream.set_read_timeout(Some(limits.handshake));
            let id = next_client;
            next_client += 1;
            let lifecycle = std::sync::Arc::new(Lifecycle {
                stopping: Default::default(),
                stop: stop_r.try_clone().ok(),
            });
            if let Ok(clone) = stream.try_clone() {
                clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, (clone, lifecycle.clone()));
            }
            let (layout, settings, clients) = (layout.clone(), settings.clone(), &clients);
            // A connection may build inline (BuildDerivation): it gets a
            // build's stack. No thread to be had: the client is dropped,
            // the daemon goes on.
            let spawned =
                hermetic_realise::schedule::build_thread().spawn_scoped(scope, move || {
                    let writer = match stream.try_clone() {
                        Ok(writer) => writer,
                        Err(e) => return tracing::warn!("cloning a client's socket: {e}"),
                    };
                    let client = Client {
                        peer,
                        hangup: stream.try_clone().ok().map(std::os::fd::OwnedFd::from),
                        refused,
                    };
                    let ended = if asks_for_serve_session(&stream) {
                        serve_session(layout, settings, client, stream, writer)
                    } else {
                        serve(
                            layout,
                            settings,
                            client,
                            stream,
                            Box::new(writer),
                            &lifecycle,
                        )
                    };
                    if let Err(e) = ended {
                        tracing::info!(
                            "a client's connection ended: {}",
                            hermetic_store::error_chain(&e)
                        );
                    }
                    clients
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    drop(ticket);
                });
            if let Err(e) = spawned {
                tracing::warn!("no thread for a client, which is dropped: {e}");
                clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        }
        drop(listener);
        // The service manager's socket outlives the daemon.
        if owns_socket {
            let _ = std::fs::remove_file(socket);
        }
        // Running builds are cancelled (cleanly: each removes what it
        // made), and every client is hung up on once its operation ends.
        let _ = nix::unistd::write(&stop_w, b"x");
        for (client, lifecycle) in clients.lock().unwrap_or_else(|e| e.into_inner()).values() {
            lifecycle
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = client.shutdown(std::net::Shutdown::Read);
        }
    });
    Ok(())
}

/// Whether a connection opens with [`SERVE_SESSION_MAGIC`] (looked at, not
/// read).
fn asks_for_serve_session(stream: &std::os::unix::net::UnixStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut magic = [0u8; 8];
    matches!(
        recv(
            stream.as_raw_fd(),
            &mut magic,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_WAITALL
        ),
        Ok(8)
    ) && u64::from_le_bytes(magic) == SERVE_SESSION_MAGIC
}

/// Runs the serve-protocol session a `store serve` of `client` asked for
/// (see [`SERVE_SESSION_MAGIC`]), with the client's trust; log lines, and
/// a refusal, go to the stderr it passed.
fn serve_session(
    layout: StoreLayout,
    settings: Settings,
    client: Client,
    stream: std::os::unix::net::UnixStream,
    writer: std::os::unix::net::UnixStream,
) -> Result<(), crate::connection::ConnectionError> {
    let mut opening = [0u8; 16];
    match hermetic_sys::recv_with_fd(stream.as_fd(), &mut opening) {
        Ok(Some(stderr)) => {
            let write = u64::from_le_bytes(opening[8..].try_into().expect("8 bytes")) == 1;
            let _ = stream.set_read_timeout(None);
            tracing::info!("serve session for user {}", client.peer.user);
            let mut stderr = std::fs::File::from(stderr);
            let log = stderr
                .try_clone()
                .map_err(crate::connection::ConnectionError::Io)?;
            let ended = crate::connection::serve_legacy(
                layout,
                settings,
                client,
                write,
                stream,
                Box::new(writer),
                Box::new(log),
            );
            // What ends a session in error is said to the user, as `store
            // serve` run here says it.
            if let Err(crate::connection::ConnectionError::ServeFailed(message)) = &ended {
                let _ = writeln!(stderr, "error: {message}");
            }
            ended
        }
        Ok(None) => Err(crate::connection::ConnectionError::Mismatch),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

/// The socket of the store's daemon when this process cannot write the
/// store's state and the daemon listens: the client is then passed on to
/// it (`daemon --stdio`, `store serve`), as Nix's are.
fn daemon_to_pass_on(layout: &StoreLayout) -> Option<std::path::PathBuf> {
    let socket = layout.state_dir.join("daemon-socket/socket");
    let writable = nix::unistd::access(&layout.state_dir, nix::unistd::AccessFlags::W_OK).is_ok();
    (!writable && socket.exists()).then_some(socket)
}

/// A `store serve` run by a user who cannot write the store's state while
/// its daemon listens: the session is the daemon's, with the user's trust
/// (see [`SERVE_SESSION_MAGIC`]); stdin and stdout are relayed to it.
/// Otherwise the session is served here, as the user running it.
pub fn run_serve(
    layout: StoreLayout,
    settings: Settings,
    write: bool,
) -> Result<(), crate::connection::ConnectionError> {
    if let Some(socket) = daemon_to_pass_on(&layout) {
        let daemon = connect(&socket)?;
        let mut opening = SERVE_SESSION_MAGIC.to_le_bytes().to_vec();
        opening.extend_from_slice(&u64::from(write).to_le_bytes());
        hermetic_sys::send_with_fd(daemon.as_fd(), &opening, std::io::stderr().as_fd())
            .map_err(std::io::Error::from)?;
        return relay(daemon).map_err(crate::connection::ConnectionError::Io);
    }
    let peer = Peer::of_process().map_err(crate::connection::ConnectionError::Io)?;
    let client = Client {
        peer,
        hangup: crate::connection::stdin_hangup(),
        refused: None,
    };
    crate::connection::serve_legacy(
        layout,
        settings,
        client,
        write,
        std::io::stdin(),
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
    )
}

/// Serves one client on stdin and stdout, as `nix-daemon --stdio` does
/// (remote building over ssh); the client is the user running it. A user
/// who cannot write the store's state while its daemon listens is passed
/// on to that daemon, byte for byte, as Nix's `nix-daemon --stdio` does:
/// the daemon then judges the user's trust from its socket.
pub fn run_stdio(
    layout: StoreLayout,
    settings: Settings,
) -> Result<(), crate::connection::ConnectionError> {
    if let Some(socket) = daemon_to_pass_on(&layout) {
        return pass_on(&socket).map_err(crate::connection::ConnectionError::Io);
    }
    let peer = Peer::of_process().map_err(crate::connection::ConnectionError::Io)?;
    serve(
        layout,
        settings,
        Client {
            peer,
            hangup: crate::connection::stdin_hangup(),
            refused: None,
        },
        std::io::stdin(),
        Box::new(std::io::stdout()),
        &Lifecycle::default(),
    )
}

/// Copies stdin to the daemon at `socket` and its answers to stdout until
/// either side ends.
fn pass_on(socket: &Path) -> std::io::Result<()> {
    relay(connect(socket)?)
}

/// A connection to the daemon's socket, its error in Nix's words.
fn connect(socket: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot connect to socket at '{}': {e}", socket.display()),
        )
    })
}

/// Relays stdin to the daemon and its answers to stdout until it hangs up.
fn relay(to_daemon: std::os::unix::net::UnixStream) -> std::io::Result<()> {
    let mut from_daemon = to_daemon.try_clone()?;
    std::thread::spawn(move || {
        let mut to_daemon = to_daemon;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    // Each answer as it comes: stdout's buffer would hold it until a
    // newline.
    let mut stdout = std::io::stdout().lock();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match std::io::Read::read(&mut from_daemon, &mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stdout.write_all(&buffer[..n])?;
        stdout.flush()?;
    }
}
