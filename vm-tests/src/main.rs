//! vm-tests: does hermetic work on kernel X? Boots each kernel of
//! `vm-tests/kernels` under QEMU, once per cgroup layout, runs hermetic's
//! integration tests inside and prints a kernel × variant table. Run it
//! through `vm-tests/run`, which builds the workspace first.

mod apt;
mod catalog;
mod cpio;
mod guest;
mod kernel;
mod qemu;
mod report;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::report::{BootEnd, Row};

/// Boot Linux kernels under QEMU and run hermetic's tests inside each.
#[derive(Parser)]
#[command(name = "vm-tests")]
struct Args {
    /// Only these kernels (names from vm-tests/kernels); repeatable.
    #[arg(long = "kernel", value_name = "K")]
    kernels: Vec<String>,
    /// Only these cgroup layouts: v2 (pure cgroup v2) or hybrid (v1
    /// controllers beside an empty v2); repeatable.
    #[arg(long = "variant", value_name = "V")]
    variants: Vec<Variant>,
    /// Only tests whose `binary::test` name contains PATTERN.
    #[arg(long = "test", value_name = "PATTERN")]
    pattern: Option<String>,
    /// Seconds a boot may take before it is killed and reported as hung.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Seconds one test may take in the guest.
    #[arg(long, default_value_t = 300)]
    test_timeout: u64,
    /// Boots at once (default: one per CPU).
    #[arg(long)]
    jobs: Option<usize>,
    /// More kernel command line, after the harness's own.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// A shell script to run in every guest as the test `probe::NAME`
    /// (exit 0: pass); repeatable.
    #[arg(long = "probe", value_name = "FILE")]
    probes: Vec<PathBuf>,
    /// The kernel-differences file to use instead of vm-tests' own.
    #[arg(long, value_name = "FILE")]
    differences: Option<PathBuf>,
    /// Fetch the newest matching packages even where the cache has a kernel.
    #[arg(long)]
    refresh: bool,
}

/// A cgroup layout the guest sets up before the tests.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum Variant {
    /// Pure cgroup v2 at /sys/fs/cgroup, as most hosts have it.
    V2,
    /// v1 controllers at /sys/fs/cgroup/<controller>, an empty v2 at
    /// /sys/fs/cgroup/unified.
    Hybrid,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::V2 => "v2",
            Variant::Hybrid => "hybrid",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("vm-tests: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the matrix; `Ok(false)` when something failed.
fn run(args: &Args) -> Result<bool> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let here = workspace.join("vm-tests");
    let cache = workspace.join("target/vm-tests");
    let sources = catalog::kernels(&here.join("kernels"))?;
    let differences_file = args
        .differences
        .clone()
        .unwrap_or_else(|| here.join("kernel-differences"));
    let differences = catalog::differences(&differences_file, &sources)?;
    if let Some(pattern) = &args.pattern
        && (pattern.is_empty() || pattern.contains(char::is_whitespace))
    {
        bail!("--test takes one word without spaces, got '{pattern}'");
    }
    for name in &args.kernels {
        if !sources.iter().any(|k| &k.name == name) {
            let known: Vec<_> = sources.iter().map(|k| k.name.as_str()).collect();
            bail!(
                "no kernel '{name}' in vm-tests/kernels (it has: {})",
                known.join(", ")
            );
        }
    }
    let chosen: Vec<_> = sources
        .iter()
        .filter(|k| args.kernels.is_empty() || args.kernels.contains(&k.name))
        .collect();
    let variants = if args.variants.is_empty() {
        vec![Variant::V2, Variant::Hybrid]
    } else {
        args.variants.clone()
    };
    let cells: Vec<(&catalog::KernelSource, Variant)> = chosen
        .iter()
        .flat_map(|k| variants.iter().map(move |v| (*k, *v)))
        .collect();

    let qemu = match qemu::find_or_install() {
        Ok(qemu) => qemu,
        Err(why) => {
            let rows: Vec<Row> = cells
                .iter()
                .map(|(k, v)| not_run(&k.name, v.name(), &why))
                .collect();
            let (text, _) = report::render(&rows);
            print!("{text}");
            return Ok(true);
        }
    };

    let mut kernels = BTreeMap::new();
    for source in &chosen {
        let kernel = kernel::fetch(source, &cache, args.refresh)
            .with_context(|| format!("kernel {}", source.name))?;
        eprintln!(
            "vm-tests: kernel {}: {}",
            source.name,
            kernel
                .packages
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        kernels.insert(source.name.clone(), kernel);
    }

    let tests = test_binaries(&workspace)?;
    let initrd_dir = cache.join("initrd");
    std::fs::create_dir_all(&initrd_dir)?;
    let base = initrd_dir.join("base.cpio");
    eprintln!("vm-tests: building the guest's initramfs");
    guest::build_base(
        &guest::GuestContents {
            workspace: &workspace,
            tests: &tests,
            probes: &args.probes,
        },
        &initrd_dir.join("stripped"),
        &base,
    )?;
    let mut initrds = BTreeMap::new();
    for (name, kernel) in &kernels {
        let initrd = initrd_dir.join(format!("{name}.cpio"));
        guest::build_for_kernel(&base, kernel, &initrd)?;
        initrds.insert(name.clone(), initrd);
    }

    let logs = cache.join("logs");
    std::fs::create_dir_all(&logs)?;
    let first = kernels.values().next().context("no kernel chosen")?;
    let (accelerator, why) = choose(&qemu, first, &initrd_dir, &logs)?;
    eprintln!("vm-tests: {accelerator:?}: {why}");

    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let queue = Mutex::new(cells.iter().enumerate().collect::<Vec<_>>());
    let finished: Mutex<Vec<(usize, Row)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some((index, (source, variant))) = next else {
                        break;
                    };
                    let kernel = &kernels[&source.name];
                    let lacks = differences.get(&source.name).cloned().unwrap_or_default();
                    let row = boot_one(BootPlan {
                        qemu: &qemu,
                        accelerator,
                        kernel,
                        initrd: &initrds[&source.name],
                        variant: *variant,
                        lacks: &lacks,
                        args,
                        log: &logs.join(format!("{}-{}.log", source.name, variant.name())),
                    });
                    let (p, f, s) = row.counts();
                    eprintln!(
                        "vm-tests: {}/{}: {} ({p} passed, {f} failed, {s} skipped) in {:.0} s",
                        row.kernel,
                        row.variant,
                        row.status(),
                        row.elapsed.as_secs_f64()
                    );
                    finished.lock().unwrap().push((index, row));
                }
            });
        }
    });
    let mut rows = finished.into_inner().unwrap();
    rows.sort_by_key(|(index, _)| *index);
    let rows: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
    let (text, failed) = report::render(&rows);
    print!("{text}");
    std::io::stdout().flush()?;
    eprintln!("vm-tests: consoles are in {}", logs.display());
    Ok(!failed)
}

fn not_run(kernel: &str, variant: &str, why: &str) -> Row {
    Row {
        kernel: kernel.to_string(),
        variant: variant.to_string(),
        end: BootEnd::NotRun(why.to_string()),
        console: report::read_console("", ""),
        elapsed: Duration::ZERO,
    }
}

/// Everything one boot needs.
struct BootPlan<'a> {
    qemu: &'a Path,
    accelerator: qemu::Accelerator,
    kernel: &'a kernel::Kernel,
    initrd: &'a Path,
    variant: Variant,
    lacks: &'a [String],
    args: &'a Args,
    log: &'a Path,
}

fn boot_one(plan: BootPlan) -> Row {
    let nonce = nonce();
    let args = plan.args;
    let mut cmdline = format!(
        "console=ttyS0 panic=-1 quiet hvt.nonce={nonce} hvt.variant={} hvt.lacks={} \
         hvt.test={} hvt.test_timeout={}",
        plan.variant.name(),
        plan.lacks.join(","),
        args.pattern.as_deref().unwrap_or(""),
        args.test_timeout,
    );
    if let Some(extra) = &args.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let booted = qemu::boot(
        plan.qemu,
        plan.accelerator,
        &plan.kernel.vmlinux,
        plan.initrd,
        &cmdline,
        Duration::from_secs(args.timeout),
        plan.log,
    );
    let mut row = not_run(&plan.kernel.name, plan.variant.name(), "");
    match booted {
        Ok(boot) => {
            row.console = report::read_console(&boot.console, &nonce);
            row.end = report::boot_end(&row.console, boot.timed_out, boot.status);
            row.elapsed = boot.elapsed;
        }
        Err(error) => row.end = BootEnd::Died(format!("QEMU did not start: {error}")),
    }
    row
}

/// A fresh value for one boot's marker.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    });
    read.expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// KVM or TCG, decided by booting `kernel` with a guest that only says hello.
fn choose(
    qemu: &Path,
    kernel: &kernel::Kernel,
    dir: &Path,
    logs: &Path,
) -> Result<(qemu::Accelerator, String)> {
    const MARKER: &str = "hvt-accelerator-probe-booted";
    let initrd = dir.join("hello.cpio");
    let mut archive = cpio::Archive::new(std::io::BufWriter::new(std::fs::File::create(&initrd)?));
    let busybox = hermetic_host::static_shell().context("no static busybox")?;
    archive.copy("bin/busybox", &busybox)?;
    archive.file(
        "init",
        0o755,
        format!("#!/bin/busybox sh\necho {MARKER}\n/bin/busybox poweroff -f\n").as_bytes(),
    )?;
    archive.finish()?.flush()?;
    Ok(qemu::choose_accelerator(
        qemu,
        &kernel.vmlinux,
        &initrd,
        MARKER,
        &logs.join("accelerator-probe.log"),
    ))
}

/// The integration-test binaries of the workspace, built if needed:
/// target name to executable (`cargo test --no-run`).
fn test_binaries(workspace: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let output = Command::new("cargo")
        .args([
            "test",
            "-p",
            "hermetic-tests",
            "--tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(workspace)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !output.status.success() {
        bail!("cargo test --no-run failed ({})", output.status);
    }
    let mut binaries = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kinds = &message["target"]["kind"];
        let is_test = kinds
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(executable)) = (
            is_test,
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            binaries.insert(name.to_string(), PathBuf::from(executable));
        }
    }
    if binaries.is_empty() {
        bail!("cargo test --no-run named no integration-test binary");
    }
    Ok(binaries)
}
