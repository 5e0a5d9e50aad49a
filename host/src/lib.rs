//! Facts of the host that defaults and sandbox plans depend on: the static
//! shell for `/bin/sh`, the `/dev` nodes, the kernel's version and
//! capability count, the CPUs this process may use, the Nix system name.
//! Each is a question to the running system, asked where a value is made
//! (settings' defaults, a sandbox's plan), never deep inside a plan: what a
//! sandbox's plan and the checks before a build need is [`HostFacts`], read
//! once per process and passed in, so that those are tested with made-up
//! hosts, without root.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// What this host is, as far as a sandbox's plan and the checks before a
/// build depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// This process runs as root (effective uid 0): it sets sandboxes up as
    /// root and runs builders as build users (B25).
    pub root: bool,
    /// The device nodes present of [`DEV_NODES`] and `kvm`, by name, with
    /// their resolved paths.
    pub dev_nodes: Vec<(String, PathBuf)>,
    /// The host has `/dev/shm` (B43).
    pub dev_shm: bool,
    /// The host has `/dev/pts/ptmx` (B44).
    pub devpts: bool,
    /// The running kernel's (major, minor) version.
    pub kernel_version: Option<(u32, u32)>,
    /// The highest capability number the kernel knows.
    pub last_capability: u32,
}

impl HostFacts {
    /// Asks the running system.
    pub fn probe() -> HostFacts {
        HostFacts {
            root: nix::unistd::geteuid().is_root(),
            dev_nodes: DEV_NODES
                .iter()
                .chain(&["kvm"])
                .filter_map(|name| dev_node(name).map(|path| (name.to_string(), path)))
                .collect(),
            dev_shm: has_dev_shm(),
            devpts: has_devpts(),
            kernel_version: kernel_version(),
            last_capability: last_capability(),
        }
    }

    /// This host's facts, probed on first use and kept for the life of the
    /// process.
    pub fn get() -> &'static HostFacts {
        static FACTS: std::sync::OnceLock<HostFacts> = std::sync::OnceLock::new();
        FACTS.get_or_init(HostFacts::probe)
    }

    /// The resolved path of the device node `name`, when the host has it.
    pub fn dev_node(&self, name: &str) -> Option<&Path> {
        self.dev_nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, path)| path.as_path())
    }

    /// Whether the kernel is at least `major.minor`.
    pub fn kernel_at_least(&self, major: u32, minor: u32) -> bool {
        self.kernel_version.is_some_and(|v| v >= (major, minor))
    }
}

/// The Nix system name of this host (`x86_64-linux` on x86_64).
pub fn system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

/// The number of CPUs this process may run on (the default of Lix's
/// `cores`).
pub fn cores() -> usize {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .count()
        })
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// Whether this process may read and write `/dev/kvm` (Nix then adds the
/// `kvm` system feature, B42).
pub fn has_kvm() -> bool {
    nix::unistd::access(
        "/dev/kvm",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok()
}

/// The device nodes every sandbox gets (B42), without `kvm`.
pub const DEV_NODES: [&str; 6] = ["full", "null", "random", "tty", "urandom", "zero"];

/// The host's `/dev/<name>` with symlinks resolved (Nix resolves its own
/// `/dev` nodes, B54), if it is a character device.
pub fn dev_node(name: &str) -> Option<PathBuf> {
    let path = std::fs::canonicalize(Path::new("/dev").join(name)).ok()?;
    let metadata = std::fs::metadata(&path).ok()?;
    metadata.file_type().is_char_device().then_some(path)
}

/// Whether the host has `/dev/shm` (B43: only then does the sandbox get one).
pub fn has_dev_shm() -> bool {
    Path::new("/dev/shm").is_dir()
}

/// Whether the host has `/dev/pts/ptmx` (B44).
pub fn has_devpts() -> bool {
    Path::new("/dev/pts/ptmx").exists()
}

/// The highest capability number the kernel knows.
pub fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

/// The running kernel's version as (major, minor).
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_str()?.to_string();
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Places where a distribution puts a statically linked busybox.
pub const STATIC_SHELL_CANDIDATES: [&str; 4] = [
    "/bin/busybox",
    "/usr/bin/busybox",
    "/usr/lib/busybox-static/busybox",
    "/sbin/busybox",
];

/// The first statically linked shell among [`STATIC_SHELL_CANDIDATES`], for
/// the default `sandbox-paths` entry `/bin/sh=<shell>` (B47).
pub fn static_shell() -> Option<PathBuf> {
    STATIC_SHELL_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| is_static_executable(path))
}

/// How to get a static shell, for messages.
pub const STATIC_SHELL_HINT: &str = "install a statically linked busybox (Debian: apt-get install busybox-static) \
     or name one with --sandbox-path /bin/sh=/path/to/static/sh";

/// Whether `path` is an ELF executable without an interpreter (statically
/// linked). Reads the ELF header and the program header table only.
pub fn is_static_executable(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut header = [0u8; 64];
    if file.read_exact_at(&mut header, 0).is_err() || &header[0..4] != b"\x7fELF" {
        return false;
    }
    let elf64 = header[4] == 2;
    let little = header[5] == 1;
    let number = |bytes: &[u8]| {
        let mut value: u64 = 0;
        for i in 0..bytes.len() {
            let byte = if little {
                bytes[bytes.len() - 1 - i]
            } else {
                bytes[i]
            };
            value = value << 8 | byte as u64;
        }
        value
    };
    let (table, entry_size, count) = if elf64 {
        (
            number(&header[32..40]),
            number(&header[54..56]),
            number(&header[56..58]),
        )
    } else {
        (
            number(&header[28..32]),
            number(&header[42..44]),
            number(&header[44..46]),
        )
    };
    if count == 0 || entry_size < 4 || count * entry_size > 1 << 16 {
        return false;
    }
    let mut entries = vec![0u8; (count * entry_size) as usize];
    if file.read_exact_at(&mut entries, table).is_err() {
        return false;
    }
    const PT_INTERP: u64 = 3;
    entries
        .chunks_exact(entry_size as usize)
        .all(|entry| number(&entry[0..4]) != PT_INTERP)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_busybox_is_static_when_installed() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("skipped: no /bin/busybox (apt-get install busybox-static)");
            return;
        }
        assert!(is_static_executable(busybox));
    }

    #[test]
    fn dynamic_programs_are_not_static() {
        // The test binary itself is dynamically linked.
        assert!(!is_static_executable(&std::env::current_exe().unwrap()));
        assert!(!is_static_executable(Path::new("/etc/passwd")));
    }
}
