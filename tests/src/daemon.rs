//! A `hermetic daemon` on a store of its own, for the daemon's tests: Nix
//! clients run as any user against it, and a client that speaks the worker
//! protocol by hand for what the stock client cannot be made to send.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use hermetic_store::{Hash, PathInfo, StoreDir, StorePath};

use crate::nix_peer::NixPeer;
use crate::{TempDir, hermetic};

/// A daemon on a store of its own, with its own nix.conf.
pub struct Daemon {
    /// Its directory: `conf/`, `root/` (the store), `socket`, `a.nix`.
    pub dir: TempDir,
    /// The daemon process, while it runs.
    pub child: Option<Child>,
    /// A command the daemon runs under (`prlimit …`), or nothing.
    launcher: Vec<String>,
}

impl Daemon {
    /// Starts a daemon as root on a store of its own: the sandbox on,
    /// `nixbld` build users, and `conf` added to its nix.conf.
    pub fn start(label: &str, conf: &str) -> Daemon {
        Self::start_under(label, conf, &[])
    }

    /// As `start`, with the daemon run by `launcher` (a command and its
    /// arguments, such as `prlimit --nofile=1024`).
    pub fn start_under(label: &str, conf: &str, launcher: &[&str]) -> Daemon {
        let dir = TempDir::new(label);
        crate::set_mode(&dir.path, 0o755);
        std::fs::create_dir_all(dir.path.join("conf")).unwrap();
        std::fs::write(
            dir.path.join("conf/nix.conf"),
            format!("sandbox = true\nbuild-users-group = nixbld\n{conf}\n"),
        )
        .unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/fixtures/shapes.nix"),
            dir.path.join("a.nix"),
        )
        .unwrap();
        crate::set_mode(&dir.path.join("a.nix"), 0o644);
        let mut daemon = Daemon {
            dir,
            child: None,
            launcher: launcher.iter().map(|s| s.to_string()).collect(),
        };
        daemon.spawn();
        daemon
    }

    /// Starts the daemon process and waits for its socket.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let (program, launcher_args) = match self.launcher.split_first() {
            Some((program, args)) => (PathBuf::from(program), args),
            None => (hermetic(), &[][..]),
        };
        let mut command = Command::new(program);
        if !launcher_args.is_empty() {
            command.args(launcher_args).arg(hermetic());
        }
        let child = command
            .arg("--store")
            .arg(self.root())
            .args(["daemon", "--socket"])
            .arg(self.socket())
            .env("NIX_CONF_DIR", self.dir.path.join("conf"))
            .stderr(self.log_file())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while UnixStream::connect(self.socket()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// What the daemon writes to stderr (its log), appended to across
    /// restarts: `daemon.log` in its directory.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("daemon.log")).unwrap_or_default()
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path.join("daemon.log"))
            .unwrap()
    }

    /// The root its store is under (`root/nix/store`).
    pub fn root(&self) -> PathBuf {
        self.dir.path.join("root")
    }

    /// Where a printed store path of this daemon's store really is.
    pub fn real(&self, printed: &str) -> PathBuf {
        self.root().join(printed.trim_start_matches('/'))
    }

    /// Writes the Nix expression `expr` to `<name>.nix` in the daemon's
    /// directory and builds it with `nix-build` as `user`.
    pub fn nix_build_as(&self, nix: &NixPeer, user: &str, name: &str, expr: &str) -> Output {
        let file = self.write_expr(name, expr);
        as_user(
            nix,
            user,
            "nix-build",
            &[
                "--store",
                &self.url(),
                file.to_str().unwrap(),
                "--no-out-link",
            ],
        )
    }

    /// Writes the Nix expression `expr` to `<name>.nix` in the daemon's
    /// directory, readable by every user; its path.
    pub fn write_expr(&self, name: &str, expr: &str) -> PathBuf {
        let file = self.dir.path.join(format!("{name}.nix"));
        std::fs::write(&file, expr).unwrap();
        crate::set_mode(&file, 0o644);
        file
    }

    /// Puts a NAR at its path in this store and registers it with no check
    /// at all, as a store written by an older or careless tool may hold it.
    pub fn register_unchecked(&self, info: PathInfo, nar: &[u8]) {
        register_unchecked(&self.root(), info, nar)
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path.join("socket")
    }

    /// The store URL a Nix client uses for this daemon.
    pub fn url(&self) -> String {
        format!(
            "unix://{}?root={}",
            self.socket().display(),
            self.root().display()
        )
    }

    /// `a.nix`: the store's test expressions (`shapes.nix`).
    pub fn file(&self) -> String {
        self.dir.path.join("a.nix").display().to_string()
    }

    /// Restarts the daemon with another nix.conf.
    pub fn restart_with(&mut self, conf: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::fs::write(
            self.dir.path.join("conf/nix.conf"),
            format!("sandbox = true\nbuild-users-group = nixbld\n{conf}\n"),
        )
        .unwrap();
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command's stdout and stderr, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a Nix client as `user`.
pub fn as_user(nix: &NixPeer, user: &str, program: &str, args: &[&str]) -> Output {
    if user == "root" {
        return nix.command(program).args(args).output().unwrap();
    }
    let user = nix::unistd::User::from_name(user).unwrap().unwrap();
    Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .arg("--reset-env")
        .arg("env")
        .arg(format!("NIX_CONF_DIR={}", nix.conf_dir().display()))
        .arg(program)
        .args(args)
        .current_dir("/")
        .output()
        .unwrap()
}

/// A client speaking the worker protocol by hand, for what the stock
/// client cannot be made to send.
pub struct RawClient {
    /// The connection.
    pub stream: UnixStream,
    /// The protocol version the daemon said it speaks.
    pub daemon_version: u64,
    /// The features the daemon offered (protocol 1.38 and later).
    pub daemon_features: Vec<String>,
    /// The daemon's version text (protocol 1.33 and later).
    pub server_version: String,
    /// Whether the daemon trusts this client: 1 yes, 2 no (protocol 1.35
    /// and later).
    pub trusted: Option<u64>,
    /// What the stderr channel said before each end, in order:
    /// `next: LINE`, `start TYPE PARENT?: TEXT [FIELDS]`, `result TYPE:
    /// FIELDS`, `stop` (activities by their types, Nix's numbers; PARENT
    /// is `child` when the activity has one).
    pub said: Vec<String>,
}

impl RawClient {
    /// Connects and greets as a protocol 1.34 client (Nix 2.8's).
    pub fn connect(daemon: &Daemon) -> RawClient {
        Self::connect_as(daemon, (1 << 8) | 34, &[])
    }

    /// Connects and greets as a client of protocol `version` offering
    /// `features`, reading what each version adds to the handshake.
    pub fn connect_as(daemon: &Daemon, version: u64, features: &[&str]) -> RawClient {
        let mut client = RawClient {
            stream: UnixStream::connect(daemon.socket()).unwrap(),
            daemon_version: 0,
            daemon_features: Vec::new(),
            server_version: String::new(),
            trusted: None,
            said: Vec::new(),
        };
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        client.u64(0x6e69_7863);
        client.u64(version);
        assert_eq!(client.read_u64(), 0x6478_696f);
        client.daemon_version = client.read_u64();
        let minor = version.min(client.daemon_version) & 0xff;
        if minor >= 38 {
            client.strings(features);
            let count = client.read_u64();
            client.daemon_features = (0..count).map(|_| client.read_string()).collect();
        }
        for n in [0, 0] {
            client.u64(n); // no CPU affinity, obsolete reserveSpace
        }
        if minor >= 33 {
            client.server_version = client.read_string();
        }
        if minor >= 35 {
            client.trusted = Some(client.read_u64());
        }
        client.work().unwrap();
        client
    }

    /// Sends a number.
    pub fn u64(&mut self, n: u64) {
        self.stream.write_all(&n.to_le_bytes()).unwrap();
    }

    /// Sends a string, padded.
    pub fn string(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.stream.write_all(s.as_bytes()).unwrap();
        self.stream
            .write_all(&[0u8; 8][..(8 - s.len() % 8) % 8])
            .unwrap();
    }

    /// Sends a list of strings.
    pub fn strings(&mut self, items: &[&str]) {
        self.u64(items.len() as u64);
        for item in items {
            self.string(item);
        }
    }

    /// Reads a number.
    pub fn read_u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        self.stream.read_exact(&mut buf).unwrap();
        u64::from_le_bytes(buf)
    }

    /// Reads a string.
    pub fn read_string(&mut self) -> String {
        let len = self.read_u64() as usize;
        let mut buf = vec![0u8; len + (8 - len % 8) % 8];
        self.stream.read_exact(&mut buf).unwrap();
        buf.truncate(len);
        String::from_utf8(buf).unwrap()
    }

    /// Reads the stderr channel to its end: Ok, or the error's message.
    pub fn work(&mut self) -> Result<(), String> {
        loop {
            match self.read_u64() {
                0x6f6c_6d67 => {
                    let line = self.read_string();
                    self.said.push(format!("next: {}", line.trim_end()));
                }
                0x5354_5254 => {
                    let (_id, _level, kind) = (self.read_u64(), self.read_u64(), self.read_u64());
                    let text = self.read_string();
                    let fields = self.read_fields();
                    let parent = if self.read_u64() != 0 { " child" } else { "" };
                    self.said
                        .push(format!("start {kind}{parent}: {text} {fields:?}"));
                }
                0x5354_4f50 => {
                    self.read_u64();
                    self.said.push("stop".into());
                }
                0x5253_4c54 => {
                    let (_id, kind) = (self.read_u64(), self.read_u64());
                    let fields = self.read_fields();
                    self.said.push(format!("result {kind}: {fields:?}"));
                }
                0x616c_7473 => return Ok(()),
                0x6378_7470 => {
                    self.read_string();
                    self.read_u64();
                    self.read_string();
                    let message = self.read_string();
                    self.read_u64();
                    self.read_u64();
                    return Err(message);
                }
                other => panic!("unexpected stderr message {other:#x}"),
            }
        }
    }

    /// An activity's or result's fields, as text.
    fn read_fields(&mut self) -> Vec<String> {
        let count = self.read_u64();
        (0..count)
            .map(|_| match self.read_u64() {
                0 => self.read_u64().to_string(),
                _ => self.read_string(),
            })
            .collect()
    }

    /// Sends `data` as one frame and the end frame.
    pub fn frames(&mut self, data: &[u8]) {
        self.u64(data.len() as u64);
        self.stream.write_all(data).unwrap();
        self.u64(0);
    }

    /// AddToStoreNar: a path with its metadata, then its NAR (what
    /// `nix-store --import` sends).
    pub fn add_to_store_nar(
        &mut self,
        info: &PathInfo,
        nar: &[u8],
        dont_check_sigs: bool,
    ) -> Result<(), String> {
        self.u64(39);
        self.stream.write_all(&path_info_bytes(info)).unwrap();
        self.u64(0); // repair
        self.u64(u64::from(dont_check_sigs));
        self.frames(nar);
        self.work()
    }

    /// AddMultipleToStore: paths with their metadata and NARs, all in
    /// frames (what `nix copy` sends).
    pub fn add_multiple_to_store(&mut self, items: &[(PathInfo, Vec<u8>)]) -> Result<(), String> {
        self.u64(44);
        self.u64(0); // repair
        self.u64(0); // don't check signatures
        let mut body = (items.len() as u64).to_le_bytes().to_vec();
        for (info, nar) in items {
            body.extend(path_info_bytes(info));
            body.extend(nar);
        }
        self.frames(&body);
        self.work()
    }

    /// AddTextToStore: a text with its references; the path it was added
    /// as.
    pub fn add_text_to_store(
        &mut self,
        name: &str,
        text: &str,
        references: &[&str],
    ) -> Result<String, String> {
        self.u64(8);
        self.string(name);
        self.string(text);
        self.strings(references);
        self.work()?;
        Ok(self.read_string())
    }

    /// Sends BuildDerivation for `/bin/sh -c SCRIPT` with one output.
    pub fn build_derivation(
        &mut self,
        drv: &str,
        out: &str,
        algo: &str,
        hash: &str,
        script: &str,
    ) -> Result<u64, String> {
        self.u64(36);
        self.string(drv);
        self.u64(1);
        for s in ["out", out, algo, hash] {
            self.string(s);
        }
        self.strings(&[]);
        self.string(&hermetic_host::system());
        self.string("/bin/sh");
        self.strings(&["-c", script]);
        self.u64(1);
        self.string("out");
        self.string(out);
        self.u64(0); // normal build
        self.work()?;
        let status = self.read_u64();
        self.read_string();
        for _ in 0..4 {
            self.read_u64();
        }
        // The built outputs as realisations: the output's id and JSON.
        let realisations = self.read_u64();
        assert_eq!(
            realisations,
            u64::from(status == 0),
            "one output when built"
        );
        for _ in 0..realisations {
            let id = self.read_string();
            assert!(id.ends_with("!out"), "{id}");
            let json = self.read_string();
            assert!(json.contains(out.rsplit('/').next().unwrap()), "{json}");
        }
        Ok(status)
    }
}

/// A path and its metadata as the protocol writes them.
fn path_info_bytes(info: &PathInfo) -> Vec<u8> {
    let store = StoreDir::default();
    let mut out = Vec::new();
    let number = |out: &mut Vec<u8>, n: u64| out.extend(n.to_le_bytes());
    wire_string(&mut out, &store.print(&info.path));
    let deriver = info.deriver.as_ref().map(|d| store.print(d));
    wire_string(&mut out, &deriver.unwrap_or_default());
    wire_string(&mut out, &info.nar_hash.to_hex());
    number(&mut out, info.references.len() as u64);
    for reference in &info.references {
        wire_string(&mut out, &store.print(reference));
    }
    number(&mut out, info.registration_time as u64);
    number(&mut out, info.nar_size);
    number(&mut out, u64::from(info.ultimate));
    number(&mut out, info.sigs.len() as u64);
    for sig in &info.sigs {
        wire_string(&mut out, sig);
    }
    wire_string(&mut out, info.ca.as_deref().unwrap_or_default());
    out
}

/// A string as the protocol writes it: its length, its bytes, zeros to a
/// multiple of eight.
fn wire_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
    out.extend(&[0u8; 8][..(8 - s.len() % 8) % 8]);
}

/// Whether a process whose command line holds `marker` runs.
pub fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
    })
}

/// A file's NAR, and the metadata of a path with that NAR and nothing
/// else (no references, deriver or content address).
pub fn file_as(file: &Path, path: StorePath) -> (PathInfo, Vec<u8>) {
    let mut nar = Vec::new();
    hermetic_store::nar::dump(file, &mut nar).unwrap();
    let info = PathInfo {
        path,
        nar_hash: Hash::sha256(&nar),
        nar_size: nar.len() as u64,
        references: BTreeSet::new(),
        deriver: None,
        registration_time: 0,
        ca: None,
        sigs: Vec::new(),
        ultimate: false,
    };
    (info, nar)
}

/// Puts a NAR at its path in the store under `root` (made if need be) and
/// registers it with no check at all, as a store written by an older or
/// careless tool, or a damaged one, may hold it.
pub fn register_unchecked(root: &std::path::Path, info: PathInfo, nar: &[u8]) {
    let layout = hermetic_store::StoreLayout::under_root(root);
    drop(hermetic_store::LocalStore::open(layout.clone()).unwrap());
    let real = layout.real_path(&info.path);
    hermetic_store::nar::parse(
        nar,
        &mut hermetic_store::nar::RestoreSink::new(real.clone()),
    )
    .unwrap();
    hermetic_store::canonical::canonicalise(&real, 0, 0).unwrap();
    let mut db = hermetic_store::db::Db::open(&layout.db_dir(), layout.store_dir.clone()).unwrap();
    db.register_all(&[hermetic_store::db::Registration {
        info,
        drv_outputs: Vec::new(),
    }])
    .unwrap();
}
