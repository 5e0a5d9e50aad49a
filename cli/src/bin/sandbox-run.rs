//! `sandbox-run`: run anything in exactly the sandbox a build gets.
//!
//! Thin: parses the command line into a `SandboxSpec`, calls the runtime,
//! prints the error chain. See `sandbox-run --help`.

use hermetic_sys::phase_clock::{Point, mark};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hermetic_config::settings::{Settings, SettingsError};
use hermetic_realise::spec::is_run_policy_setting;
use hermetic_runtime::job::{Job, JobOutcome, LimitHit};
use hermetic_runtime::{
    BuildUser, Network, RunOptions, RunPolicy, SandboxPath, SandboxSpec, environment,
};

/// Exit status when sandbox-run itself fails (before the command runs).
const EXIT_FAILURE: u8 = 125;
/// Exit status when the command cannot be executed.
const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit status when the command does not exist.
const EXIT_NOT_FOUND: u8 = 127;
/// Exit status when a time limit ended the command (Nix's).
const EXIT_TIMED_OUT: u8 = 101;

#[derive(Parser, Debug)]
#[command(
    name = "sandbox-run",
    version,
    about = "Run a command in exactly the sandbox a Nix build gets",
    after_help = "Exit status: the command's, 128+N when signal N killed it; 125 when sandbox-run \
                  itself fails, 126 when the command cannot be executed, 127 when it does not exist.\n\
                  With no command, runs /bin/sh (interactively when stdin is a terminal).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    subcommand: Option<Subcommands>,

    /// The store, as `hermetic --store` and Nix's `--store` take it: `local` (the default:
    /// /nix/store, or $NIX_STORE_DIR), `local?root=DIR` or a path DIR (paths in
    /// DIR/nix/store, shown as /nix/store inside). The sandbox's scratch directory is made in
    /// the store directory, as a build's is (and removed afterwards); in a Nix store's (one
    /// with its registry, `…/nix/var/nix/db`) it is inside a staging directory a temporary
    /// root keeps every garbage collector from deleting.
    #[arg(long, value_name = "URI")]
    store: Option<String>,

    /// A store path the sandbox holds at its own path (repeatable).
    #[arg(long = "input", value_name = "PATH")]
    inputs: Vec<PathBuf>,

    /// A host path to bind, in Nix's sandbox-paths syntax: P, T=S, trailing ? for optional
    /// (repeatable).
    #[arg(long = "sandbox-path", value_name = "SPEC")]
    sandbox_paths: Vec<SandboxPath>,

    /// Do not add the default sandbox path /bin/sh=<static busybox>.
    #[arg(long)]
    no_default_sandbox_paths: bool,

    /// loopback (a network namespace with only lo) or host.
    #[arg(long, value_name = "loopback|host", value_parser = parse_network)]
    network: Option<Network>,

    /// Set an environment variable (repeatable). Like a derivation attribute, it can override
    /// PATH, HOME, NIX_STORE and NIX_BUILD_CORES but not TMPDIR, NIX_BUILD_TOP, PWD, TERM.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// The build's system, e.g. i686-linux (32-bit personality).
    #[arg(long, value_name = "SYSTEM")]
    system: Option<String>,

    /// Host directory to use as the build directory (default: a fresh one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    build_dir: Option<PathBuf>,

    /// The build directory inside the sandbox (setting sandbox-build-dir).
    #[arg(long, value_name = "PATH")]
    sandbox_build_dir: Option<PathBuf>,

    /// Host ids of the builder when running as root: UID:GID, or a user name (its uid and
    /// primary group). Without it, root takes a free build user from the pool
    /// (build-users-group, auto-allocate-uids), as a build would.
    #[arg(long, value_name = "UID:GID|NAME", value_parser = parse_build_user)]
    build_user: Option<BuildUser>,

    /// A uid-range build: 65536 ids mapped from 0, the command root of its own user namespace
    /// (needs auto-allocate-uids and use-cgroups).
    #[arg(long)]
    uid_range: bool,

    /// Set a setting, as in nix.conf (repeatable): build-users-group, auto-allocate-uids,
    /// start-id, id-count, use-cgroups, max-silent-time, timeout, max-build-pids,
    /// max-build-memory. Any other is not used by sandbox-run, and it says so.
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"])]
    options: Vec<String>,

    /// Kill the command after this many seconds without output (setting max-silent-time).
    #[arg(long, value_name = "SECONDS")]
    max_silent_time: Option<u64>,

    /// Kill the command after this many seconds (setting timeout).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,

    /// The state directory holding build-user locks and cgroup records (default:
    /// $NIX_STATE_DIR or /nix/var/nix, the host's, shared with every build and with Nix's
    /// own user pool; as root, sandbox-run takes its build-user lock there).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Size of /dev/shm (setting sandbox-dev-shm-size), e.g. 50% or 1G.
    #[arg(long, value_name = "SIZE")]
    shm_size: Option<String>,

    /// Bind /dev/kvm when the host has it.
    #[arg(long)]
    kvm: bool,

    /// No sandbox: run on the host's filesystem without namespaces, as Nix's unsandboxed builds
    /// (as the build user, under the seccomp filter).
    #[arg(long)]
    no_sandbox: bool,

    /// The builder cannot make user namespaces (setting sandbox-block-nested-userns).
    #[arg(long)]
    block_nested_userns: bool,

    /// Do not install the seccomp filter (Nix's filter-syscalls = false): only to find out
    /// whether the filter breaks a build; the builder can then make setuid files.
    #[arg(long)]
    no_filter_syscalls: bool,

    /// NIX_BUILD_CORES (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,

    /// Keep the scratch directory (build directory, /tmp, store writes) and say where (in a
    /// Nix store, under `<state>/hermetic/kept/`, out of garbage collectors' way).
    #[arg(long)]
    keep: bool,

    /// Read the whole SandboxSpec from a JSON file (a command after -- replaces its builder).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["store", "inputs", "sandbox_paths", "network", "env", "system",
                              "build_dir", "sandbox_build_dir", "build_user", "shm_size", "kvm", "cores",
                              "no_default_sandbox_paths", "no_sandbox", "block_nested_userns",
                              "no_filter_syscalls", "uid_range"]
    )]
    spec: Option<PathBuf>,

    /// Enter the sandbox a build of this derivation (a `.drv` in the store
    /// --store names, default the system's) would get, reading nix.conf as a
    /// build does: its inputs (which must be valid), sandbox paths,
    /// environment, build user, network and filter; runs CMD, a shell with
    /// --shell, else the builder. Nothing is registered.
    #[arg(
        long,
        value_name = "DRV",
        conflicts_with_all = ["spec", "print_plan", "inputs", "sandbox_paths", "network",
                              "env", "system", "build_dir", "sandbox_build_dir", "build_user",
                              "shm_size", "kvm", "cores", "no_default_sandbox_paths", "no_sandbox",
                              "block_nested_userns", "no_filter_syscalls", "uid_range", "keep"]
    )]
    drv: Option<PathBuf>,

    /// With --drv: enter the sandbox a failed build of it kept (keep-failed;
    /// the directory its 'note: keeping build directory' line names, without
    /// '/build') as the build left it: its build directory, /tmp and partial
    /// outputs, given to this run's build user. They stay kept afterwards.
    #[arg(long, value_name = "DIR", requires = "drv")]
    kept: Option<PathBuf>,

    /// Print the spec and the plan (mounts, ids, process) as JSON; run nothing.
    #[arg(long)]
    print_plan: bool,

    /// Run interactively with the terminal wired through.
    #[arg(long)]
    shell: bool,

    /// Log each step (also: HERMETIC_LOG=debug), and the phase table of `--timings`.
    #[arg(long)]
    debug: bool,

    /// After the run, print to stderr how long each phase of the sandbox's start and end
    /// took (argument parsing, lease, plan, clone, mounts, pivot, identity switch, seccomp,
    /// exec, teardown), in microseconds, the steps between clone and execve included.
    #[arg(long)]
    timings: bool,

    /// The command and its arguments (an absolute path inside the sandbox).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Subcommands {
    /// Check whether this host can make sandboxes, and say how to fix what it cannot.
    Doctor,
}

fn parse_network(text: &str) -> Result<Network, String> {
    match text {
        "loopback" => Ok(Network::Loopback),
        "host" => Ok(Network::Host),
        _ => Err(format!("'{text}' is neither 'loopback' nor 'host'")),
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not NAME=VALUE")),
    }
}

fn parse_build_user(text: &str) -> Result<BuildUser, String> {
    if let Some((uid, gid)) = text.split_once(':')
        && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
    {
        return Ok(BuildUser::single(uid, gid));
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(BuildUser::single(user.uid.as_raw(), user.gid.as_raw())),
        _ => Err(format!(
            "'{text}' is neither UID:GID nor the name of a user"
        )),
    }
}

fn main() -> ExitCode {
    // Timed from here when asked (looked for before parsing, which is
    // timed too).
    let timed = std::env::args_os().any(|a| a == "--timings" || a == "--debug");
    if timed && let Err(e) = hermetic_sys::phase_clock::enable() {
        eprintln!("warning: cannot time the phases: {e}");
    }
    mark(Point::Start);
    let cli = Cli::parse();
    hermetic_cli::init_logging(cli.debug, "warn");
    let result = match cli.subcommand {
        Some(Subcommands::Doctor) => doctor(),
        None if cli.drv.is_some() => enter_drv(cli),
        None => run(cli),
    };
    mark(Point::End);
    if timed {
        eprint!(
            "{}",
            hermetic_cli::phase_table(&hermetic_sys::phase_clock::readings())
        );
    }
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            let code = match error.downcast_ref::<hermetic_runtime::SandboxError>() {
                Some(hermetic_runtime::SandboxError::Exec { errno, .. })
                    if *errno == nix::errno::Errno::ENOENT =>
                {
                    EXIT_NOT_FOUND
                }
                Some(hermetic_runtime::SandboxError::Exec { .. }) => EXIT_CANNOT_EXECUTE,
                _ => EXIT_FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

fn doctor() -> Result<ExitCode> {
    let mut report = hermetic_runtime::doctor::examine();
    report.checks.extend(hermetic_cli::doctor_config::examine());
    print!("{report}");
    Ok(if report.sandbox_possible() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A `--spec` file: a bare `SandboxSpec`, or what `--print-plan` printed
/// (its `spec` and `run-policy`; the rest is what they became, and is
/// planned again).
fn read_spec_file(file: &Path) -> Result<(SandboxSpec, Option<RunPolicy>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading '{}'", file.display()))?;
    let invalid = || format!("'{}' is not a valid SandboxSpec", file.display());
    let value: serde_json::Value = serde_json::from_str(&text).with_context(invalid)?;
    let Some(printed) = value.as_object().filter(|o| o.contains_key("mount-plan")) else {
        return Ok((serde_json::from_value(value).with_context(invalid)?, None));
    };
    let spec = printed.get("spec").cloned().unwrap_or_default();
    let spec = serde_json::from_value(spec).with_context(|| {
        format!(
            "the 'spec' of the printed plan '{}' is not valid",
            file.display()
        )
    })?;
    let policy = match printed.get("run-policy") {
        Some(policy) => Some(serde_json::from_value(policy.clone()).with_context(|| {
            format!(
                "the 'run-policy' of the printed plan '{}' is not valid",
                file.display()
            )
        })?),
        None => None,
    };
    Ok((spec, policy))
}

/// The store `--store` names (one meaning with `hermetic --store`), when
/// given; its store directory must exist.
fn store_layout(cli: &Cli) -> Result<Option<hermetic_store::StoreLayout>> {
    let Some(uri) = &cli.store else {
        return Ok(None);
    };
    let layout = hermetic_store::StoreLayout::from_store_uri(uri)?;
    if !layout.real_store_dir.is_dir() {
        bail!(
            "there is no store directory at '{}': --store takes a store's root (the store \
             directory is ROOT/nix/store) or a store URI such as 'local?root=DIR', as \
             'hermetic --store' and 'nix --store' do",
            layout.real_store_dir.display()
        );
    }
    Ok(Some(layout))
}

/// The spec the command line describes, and the run policy when `--spec`
/// gives one.
fn spec_from(cli: &Cli) -> Result<(SandboxSpec, Option<RunPolicy>)> {
    let (builder, args) = match cli.command.split_first() {
        Some((builder, args)) => (Some(PathBuf::from(builder)), args.to_vec()),
        None => (None, Vec::new()),
    };
    if let Some(file) = &cli.spec {
        let (mut spec, policy) = read_spec_file(file)?;
        if let Some(builder) = builder {
            spec.builder = builder;
            spec.args = args;
        }
        return Ok((spec, policy));
    }
    let mut spec = SandboxSpec::new(builder.unwrap_or_else(|| PathBuf::from("/bin/sh")), args);
    if let Some(layout) = store_layout(cli)? {
        spec.store_dir = PathBuf::from(layout.store_dir.as_str());
        spec.real_store_dir = Some(layout.real_store_dir);
    }
    spec.inputs = cli.inputs.clone();
    spec.network = cli.network.unwrap_or_default();
    if let Some(system) = &cli.system {
        spec.system = system.clone();
    }
    spec.build_dir = cli.build_dir.clone();
    if let Some(dir) = &cli.sandbox_build_dir {
        spec.sandbox_build_dir = dir.clone();
    }
    spec.build_user = cli.build_user;
    if let Some(size) = &cli.shm_size {
        spec.sandbox_dev_shm_size = size.clone();
    }
    spec.kvm = cli.kvm;
    spec.sandbox = !cli.no_sandbox;
    spec.sandbox_block_nested_userns = cli.block_nested_userns;
    spec.filter_syscalls = !cli.no_filter_syscalls;
    spec.uid_range = cli.uid_range;

    let shell_bound = cli
        .sandbox_paths
        .iter()
        .any(|p| p.target == Path::new("/bin/sh"));
    if !cli.no_default_sandbox_paths && !shell_bound {
        match hermetic_host::static_shell() {
            Some(shell) => spec.sandbox_paths.push(SandboxPath {
                target: PathBuf::from("/bin/sh"),
                source: shell,
                optional: false,
            }),
            None if spec.builder == Path::new("/bin/sh") => bail!(
                "the sandbox has no /bin/sh: no statically linked shell was found (looked at {}); {}",
                hermetic_host::STATIC_SHELL_CANDIDATES.join(", "),
                hermetic_host::STATIC_SHELL_HINT
            ),
            None => eprintln!(
                "warning: the sandbox has no /bin/sh: no statically linked shell was found; {}",
                hermetic_host::STATIC_SHELL_HINT
            ),
        }
    }
    spec.sandbox_paths.extend(cli.sandbox_paths.iter().cloned());
    let cores = cli.cores.unwrap_or_else(hermetic_host::cores);
    spec.env = environment::builder_environment(
        &spec.store_dir,
        &spec.sandbox_build_dir,
        cores,
        cli.env.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    Ok((spec, None))
}

/// `--max-silent-time` and `--timeout`, over what the settings say.
fn apply_time_limits(cli: &Cli, settings: &mut Settings) {
    if let Some(seconds) = cli.max_silent_time {
        settings.max_silent_time = seconds;
    }
    if let Some(seconds) = cli.timeout {
        settings.timeout = seconds;
    }
}

/// The settings the command line gives.
fn settings_from(cli: &Cli) -> Result<Settings> {
    let mut settings = Settings::for_caller();
    for pair in cli.options.chunks(2) {
        let [name, value] = pair else { continue };
        match settings.set(name, value) {
            Ok(()) => {
                // A setting sandbox-run accepts is one it uses, or it says so.
                if !is_run_policy_setting(name) {
                    eprintln!(
                        "warning: the setting '{name}' is not used by sandbox-run \
                         (the sandbox comes from its own flags; see sandbox-run --help)"
                    );
                }
            }
            // Nix warns about a setting it does not know, and goes on.
            Err(error @ SettingsError::Unknown(_)) => eprintln!("warning: {error}"),
            Err(error) => return Err(error.into()),
        }
    }
    apply_time_limits(cli, &mut settings);
    if let Some(dir) = &cli.state_dir {
        settings.state_dir = dir.clone();
    }
    Ok(settings)
}

/// The first command-line option that sets part of the run policy, as the
/// user wrote it.
fn policy_options_given(cli: &Cli) -> Option<String> {
    let flags = [
        (cli.max_silent_time.is_some(), "--max-silent-time"),
        (cli.timeout.is_some(), "--timeout"),
        (cli.state_dir.is_some(), "--state-dir"),
    ];
    if let Some((_, flag)) = flags.iter().find(|(given, _)| *given) {
        return Some(flag.to_string());
    }
    cli.options
        .chunks(2)
        .find(|pair| is_run_policy_setting(&pair[0]))
        .map(|pair| format!("'--option {}'", pair[0]))
}

/// Says how the build used its cgroup, and which of its limits stopped it.
fn report_usage(outcome: &JobOutcome, policy: &RunPolicy) {
    let Some(usage) = outcome.usage else {
        return;
    };
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let peak = usage
        .peak_memory
        .map(|bytes| format!("; peak memory {:.1} MiB", mib(bytes)))
        .unwrap_or_default();
    eprintln!(
        "note: CPU time {:.3} s user, {:.3} s system{peak}",
        usage.user_usec as f64 / 1e6,
        usage.system_usec as f64 / 1e6,
    );
    for hit in outcome.limits_hit() {
        match hit {
            LimitHit::Memory => eprintln!(
                "note: the build ran out of memory: the kernel killed {} of its processes at its limit \
                 (max-build-memory = {:.1} MiB)",
                usage.oom_kills,
                mib(policy.max_build_memory)
            ),
            LimitHit::Pids => eprintln!(
                "note: the build reached its process limit (max-build-pids = {}): {} of its forks failed",
                policy.max_build_pids, usage.pids_limit_hits
            ),
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let (mut spec, policy_from_file) = spec_from(&cli)?;
    let settings = settings_from(&cli)?;
    mark(Point::Configured);
    let label = spec.builder.display().to_string();
    let policy = match policy_from_file {
        Some(policy) => {
            if let Some(given) = policy_options_given(&cli) {
                bail!(
                    "{given} conflicts with the run policy in '{}'; change the file's 'run-policy' instead",
                    cli.spec.as_deref().unwrap_or(Path::new("")).display()
                );
            }
            policy
        }
        None => hermetic_realise::spec::run_policy(&settings),
    };
    let held = hold_scratch_in_store(&mut spec, cli.print_plan)?;
    if held.is_some() {
        mark(Point::ScratchHeld);
    }
    let job = Job::start(spec, &policy, &label, &mut |notice| eprintln!("{notice}"))?;
    let sandbox = job.prepare()?;
    if cli.print_plan {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &job.printed_plan(&sandbox))?;
        writeln!(stdout)?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdin_is_terminal = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let terminal = cli.shell || (cli.command.is_empty() && cli.spec.is_none() && stdin_is_terminal);

    // SIGINT, SIGTERM and SIGHUP end the sandbox cleanly: blocked here and
    // read from a signalfd by the supervisor, which kills the sandbox and
    // removes its scratch directory before sandbox-run exits.
    let cancel = hermetic_cli::interrupts_as_fd()?;

    let options = RunOptions {
        keep: cli.keep,
        terminal,
        cancel: Some(cancel.as_fd()),
        ..RunOptions::default()
    };
    let mut stdout = std::io::stdout().lock();
    let ended = job.run(&sandbox, options, &mut stdout)?;
    drop(stdout);
    report_usage(&ended, &policy);
    let outcome = ended.outcome;
    // A held scratch directory is let go, or moved aside when kept.
    let moved_to = held.and_then(|held| held.end(outcome.kept.is_some()));
    mark(Point::ScratchLetGo);
    let moved = |path: &Path| match &moved_to {
        Some((from, to)) => path
            .strip_prefix(from)
            .map_or_else(|_| path.to_path_buf(), |rest| to.join(rest)),
        None => path.to_path_buf(),
    };
    if let Some(kept) = &outcome.kept {
        eprintln!(
            "note: keeping build directory '{}'",
            moved(sandbox.build_dir_on_host()).display()
        );
        if let Some(store) = &kept.store {
            eprintln!(
                "note: the sandbox's writes to the store directory are in '{}'",
                moved(store).display()
            );
        }
        if let Some(tmp) = &kept.tmp {
            eprintln!("note: the sandbox's /tmp is '{}'", moved(tmp).display());
        }
    }
    Ok(exit_code(&outcome, &label, &cancel))
}

/// `--drv`: runs the command, a shell or the builder in the sandbox a
/// build of the derivation would get (the build's own path through
/// `Goal::enter`, so nothing can differ), then says how it ended.
fn enter_drv(cli: Cli) -> Result<ExitCode> {
    use hermetic_store::{LocalStore, StoreLayout};
    let file = cli.drv.clone().expect("--drv was given");
    let options = hermetic_cli::option_pairs(&cli.options);
    let mut settings = Settings::for_caller();
    hermetic_config::nixconf::load(&mut settings, &options, &mut |w| eprintln!("warning: {w}"))?;
    apply_time_limits(&cli, &mut settings);
    let layout = store_layout(&cli)?.unwrap_or_else(StoreLayout::system);
    let mut store = LocalStore::open(layout.clone()).context("cannot open the store")?;
    let drv_path = layout
        .parse_user_path(&file)
        .ok()
        .filter(|p| p.is_derivation() && store.is_valid(p).unwrap_or(false))
        .with_context(|| {
            format!(
                "'{}' is not a derivation in the store '{}'; add it first (nix-instantiate, \
                 or 'hermetic derivation add')",
                file.display(),
                layout.store_dir.as_str()
            )
        })?;
    let drv = store.read_derivation(&drv_path)?;
    let kept = match &cli.kept {
        Some(dir) => Some(
            hermetic_realise::finish::KeptSandbox::find(dir)
                .map_err(|e| anyhow::anyhow!(hermetic_realise::error_chain(&e)))?,
        ),
        None => None,
    };
    let stdin_is_terminal = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let command = if cli.shell && cli.command.is_empty() {
        vec!["/bin/sh".to_owned()]
    } else {
        cli.command.clone()
    };
    // A shell gets the terminal; so does the builder or a command when
    // stdin is one and --shell was given.
    let terminal = cli.shell && stdin_is_terminal;
    let cancel = hermetic_cli::interrupts_as_fd()?;
    let goal = hermetic_realise::goal::Goal {
        drv_path: drv_path.clone(),
        drv,
        check: false,
        settings: &settings,
        cancel: Some(cancel.as_fd()),
        log: std::sync::Arc::new(std::sync::Mutex::new(std::io::stderr())),
        locks: None,
    };
    let mut stdout = std::io::stdout().lock();
    let enter = hermetic_realise::goal::Enter {
        command,
        terminal,
        output: &mut stdout,
        kept,
    };
    let outcome = goal
        .enter(&mut store, enter, &mut |line| eprintln!("{line}"))
        .map_err(|failure| anyhow::anyhow!(hermetic_realise::error_chain(&failure.error)))?;
    drop(stdout);
    let label = layout.store_dir.print(&drv_path);
    Ok(exit_code(&outcome, &label, &cancel))
}

/// A directory in a Nix store's store directory that sandbox-run's scratch
/// directory is made in, held by a temporary root for as long as
/// sandbox-run runs, so that no garbage collector (Nix's deletes whatever
/// in the store directory is neither a valid path nor a root) removes the
/// scratch of a running sandbox.
struct HeldScratch {
    /// The store's state directory.
    state_dir: PathBuf,
    /// The temporary root on the directory's name.
    _roots: hermetic_store::temp_roots::TempRoots,
    pending: hermetic_store::pending::Pending,
}

impl HeldScratch {
    /// Lets the directory go: removed, or with `kept` moved to the store's
    /// kept directory; then where it was and where it is now.
    fn end(self, kept: bool) -> Option<(PathBuf, PathBuf)> {
        let staging = self.pending.staging().to_owned();
        if !kept {
            if let Err(e) = self.pending.finish() {
                eprintln!("warning: {e:#}");
            }
            return None;
        }
        let (at, error) = self.pending.keep_aside(&self.state_dir, "sandbox-run");
        if let Some(e) = error {
            eprintln!("warning: {e:#}; a garbage collection may delete it");
        }
        Some((staging, at))
    }
}

/// When the sandbox's scratch directory would go in the store directory
/// of a Nix store (`…/nix/store` beside `…/nix/var/nix/db`, writable), a
/// held directory there becomes its parent; see [`HeldScratch`].
fn hold_scratch_in_store(spec: &mut SandboxSpec, plan_only: bool) -> Result<Option<HeldScratch>> {
    let real_store_dir = spec.real_store_dir().to_path_buf();
    if plan_only
        || spec.scratch_parent.is_some()
        || !real_store_dir.ends_with("nix/store")
        || nix::unistd::access(&real_store_dir, nix::unistd::AccessFlags::W_OK).is_err()
    {
        return Ok(None);
    }
    let root = real_store_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let layout = hermetic_store::StoreLayout::under_root(root);
    if !layout.db_dir().join("db.sqlite").exists() {
        return Ok(None);
    }
    // Only the state directory's roots and records: the database is not
    // needed for a hold, and opening it is most of a start's cost here.
    let (roots, pending) = hermetic_store::local::begin_unopened(&layout)
        .with_context(|| format!("holding a directory in '{}'", real_store_dir.display()))?;
    std::fs::create_dir(pending.staging())
        .with_context(|| format!("creating '{}'", pending.staging().display()))?;
    spec.scratch_parent = Some(pending.staging().to_owned());
    Ok(Some(HeldScratch {
        state_dir: layout.state_dir,
        _roots: roots,
        pending,
    }))
}

/// sandbox-run's exit status for how the sandbox ended: the command's,
/// 101 for a time limit, 128+N for the signal that interrupted it; what
/// ended it is said.
fn exit_code(
    outcome: &hermetic_runtime::Outcome,
    label: &str,
    cancel: &nix::sys::signalfd::SignalFd,
) -> ExitCode {
    if let Some(timed_out) = &outcome.timed_out {
        eprintln!("error: '{label}' {timed_out}");
        return ExitCode::from(EXIT_TIMED_OUT);
    }
    if outcome.cancelled {
        let signal = cancel
            .read_signal()
            .ok()
            .flatten()
            .map(|info| info.ssi_signo as i32)
            .unwrap_or(libc_sigterm());
        eprintln!("sandbox-run: interrupted by signal {signal}; the sandbox was killed");
        return ExitCode::from((128 + signal) as u8);
    }
    ExitCode::from(outcome.status.code().clamp(0, 255) as u8)
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}
