//! QEMU: finding (or installing) it, choosing KVM only where it really
//! boots a kernel, and one boot with its serial console captured and a
//! deadline after which the machine is killed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";

/// The machine every boot uses (the fast-boot line).
const MACHINE: [&str; 10] = [
    "-M",
    "pc",
    "-smp",
    "1",
    // The guest unpacks its initramfs (hermetic and the test binaries,
    // ~160 MB) into memory: with 512 MB, kernel 7.3 failed to
    // ("Initramfs unpacking failed: write error") and ran no test.
    "-m",
    "1024",
    "-nodefaults",
    "-no-reboot",
    "-display",
    "none",
];

/// `qemu-system-x86_64`, installed with apt-get when missing and running as
/// root; `Err` says why there is none.
pub fn find_or_install() -> Result<PathBuf, String> {
    if let Some(found) = on_path(QEMU) {
        return Ok(found);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "{QEMU} is not installed and only root may install it (apt-get install qemu-system-x86)"
        ));
    }
    eprintln!("vm-tests: installing qemu-system-x86");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "qemu-system-x86"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    match status {
        Ok(s) if s.success() => {
            on_path(QEMU).ok_or(format!("{QEMU} is still missing after apt-get"))
        }
        Ok(s) => Err(format!("apt-get install qemu-system-x86 failed ({s})")),
        Err(e) => Err(format!(
            "{QEMU} is not installed and apt-get cannot run: {e}"
        )),
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.exists())
}

/// How QEMU runs the guest's instructions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accelerator {
    /// Hardware virtualisation, where it boots a kernel.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// A boot's outcome as QEMU saw it.
pub struct Boot {
    /// Everything the serial console said.
    pub console: String,
    /// Whether the deadline passed and the machine was killed.
    pub timed_out: bool,
    /// QEMU's exit status, if it exited by itself.
    pub status: Option<std::process::ExitStatus>,
    /// Wall-clock time of the boot.
    pub elapsed: Duration,
}

/// Boots `kernel` with `initrd` and `cmdline`, killing QEMU after
/// `timeout`; the console also goes to `log` as it comes.
pub fn boot(
    qemu: &Path,
    accelerator: Accelerator,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    timeout: Duration,
    log: &Path,
) -> std::io::Result<Boot> {
    let mut command = Command::new(qemu);
    command.args(MACHINE);
    match accelerator {
        Accelerator::Kvm => command.args(["-accel", "kvm", "-cpu", "host"]),
        // `max` has RDRAND, which seeds the kernel's random pool at once: without
        // it 5.10 may still be waiting for entropy when a test needs some.
        Accelerator::Tcg => command.args(["-accel", "tcg", "-cpu", "max"]),
    };
    command
        .args(["-serial", "stdio", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn()?;
    let console = Arc::new(Mutex::new(Vec::new()));
    let mut log_file = std::fs::File::create(log)?;
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut stream| {
        let console = Arc::clone(&console);
        let mut log_file = log_file.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut buffer = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                console.lock().unwrap().extend_from_slice(&buffer[..n]);
                let _ = log_file.write_all(&buffer[..n]);
            }
        })
    })
    .collect();
    let deadline = started + timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (Some(status), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for reader in readers {
        let _ = reader.join();
    }
    use std::io::Write;
    let _ = log_file.flush();
    let console = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    Ok(Boot {
        console,
        timed_out,
        status,
        elapsed: started.elapsed(),
    })
}

/// KVM if `/dev/kvm` opens and a tiny guest (`probe_initrd`, whose init
/// prints `marker` and powers off) boots under it within 30 seconds; else
/// TCG, with the reason.
pub fn choose_accelerator(
    qemu: &Path,
    kernel: &Path,
    probe_initrd: &Path,
    marker: &str,
    log: &Path,
) -> (Accelerator, String) {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (Accelerator::Tcg, "no usable /dev/kvm".into());
    }
    let tried = boot(
        qemu,
        Accelerator::Kvm,
        kernel,
        probe_initrd,
        "console=ttyS0 panic=-1 quiet",
        Duration::from_secs(30),
        log,
    );
    match tried {
        Ok(boot) if boot.console.contains(marker) => {
            (Accelerator::Kvm, "KVM boots a kernel".into())
        }
        Ok(boot) => {
            let last = boot.console.lines().rev().find(|l| !l.trim().is_empty());
            (
                Accelerator::Tcg,
                format!(
                    "/dev/kvm is there but a kernel does not boot under it ({})",
                    last.unwrap_or("no output").trim()
                ),
            )
        }
        Err(e) => (
            Accelerator::Tcg,
            format!("QEMU with KVM did not start: {e}"),
        ),
    }
}
