//! `hermetic`: the store (and later builds and the daemon). A thin layer:
//! parse the command line, call the store library, print the result or the
//! whole error chain.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hermetic_cli::build_targets::{Wanted, split_outputs};
use hermetic_cli::status_line::{AboveStatus, StatusLine};
use hermetic_realise::log_tail::{LogTails, TailsOnly};
use hermetic_store::binary_cache::{BinaryCache, CacheError};
use hermetic_store::cache_writer::CacheWriter;
use hermetic_store::derivation::json;
use hermetic_store::local::collect::{GcAction, GcOptions};
use hermetic_store::substituters::{Closure, Substituters};
use hermetic_store::{Derivation, LocalStore, StoreLayout, StorePath};

/// hermetic: Nix's store and sandboxed builds.
#[derive(Parser)]
#[command(name = "hermetic", version)]
struct Cli {
    /// The store, as a Nix store URI: `local` (the default: /nix/store,
    /// state in $NIX_STATE_DIR or /nix/var/nix), `local?root=DIR` or a path
    /// DIR (paths in DIR/nix/store, shown as /nix/store; state in
    /// DIR/nix/var/nix); for `build` also `daemon` or `unix://SOCKET`, a
    /// daemon's store, built through it. Any other URI is refused. Build-user locks and
    /// cgroup records are host-wide, in $NIX_STATE_DIR or /nix/var/nix
    /// whatever the store, as Nix keeps its user pool.
    #[arg(long, global = true, value_name = "URI")]
    store: Option<String>,
    /// Log debug lines to stderr.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store paths: add, inspect, verify.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Derivations: show, add.
    #[command(subcommand)]
    Derivation(DerivationCommand),
    /// Build derivations (`.drv` files in the store or anywhere, or their JSON)
    /// and the missing inputs they need; prints their output paths.
    Build(BuildArgs),
    /// Serve Nix clients (Nix's worker protocol) on a Unix socket, or one client
    /// on stdin/stdout.
    Daemon {
        /// The socket (default: <state>/daemon-socket/socket, as Nix's).
        #[arg(long, value_name = "PATH", conflicts_with = "stdio")]
        socket: Option<PathBuf>,
        /// Serve one client on stdin/stdout, as `nix-daemon --stdio`.
        #[arg(long)]
        stdio: bool,
        /// Print the version the daemon tells clients (`nix store info`'s
        /// `Version:`) and exit.
        #[arg(long)]
        nix_version: bool,
    },
    /// Run one of Nix's built-in builders (`builtin:NAME`) in the current
    /// sandbox, its attributes from the environment: what a build with that
    /// builder runs.
    #[command(name = "__builtin", hide = true)]
    Builtin {
        /// The builtin's name (`buildenv`, `fetchurl`, `unpack-channel`).
        name: String,
        /// A hashed mirror for `fetchurl` (`hashed-mirrors`).
        #[arg(long = "hashed-mirror")]
        hashed_mirrors: Vec<String>,
        /// The netrc file for `fetchurl`'s downloads (`netrc-file`).
        #[arg(long = "netrc-file")]
        netrc_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Rebuild derivations whose outputs are valid and compare (status 104 when
    /// they differ).
    #[arg(long)]
    check: bool,
    /// Keep the build directory of a failed build (`keep-failed`).
    #[arg(long, short = 'K')]
    keep_failed: bool,
    /// Go on with other builds after one fails (`keep-going`).
    #[arg(long, short = 'k')]
    keep_going: bool,
    /// Builds at once (`max-jobs`; a number or `auto`).
    #[arg(long, short = 'j', value_name = "N")]
    max_jobs: Option<String>,
    /// A setting, as in nix.conf (repeatable), after nix.conf and NIX_CONFIG.
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"])]
    options: Vec<String>,
    /// Make a link to each output wanted, a garbage collector root, as
    /// `nix-build -o` names them (`result`, `result-dev`, `result-2`, …).
    #[arg(long = "out-link", short = 'o', value_name = "LINK")]
    out_link: Option<PathBuf>,
    /// Do not show the builders' output (`nix-build -Q`).
    #[arg(long = "no-build-output", short = 'Q')]
    no_build_output: bool,
    /// Say more (`-v`: what hermetic does; `-vv`: debug lines).
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// The derivations (`.drv` in the store or a file, or their JSON), each
    /// with the outputs wanted (`DRV^out,dev`, `DRV!out`; default all), or
    /// store paths to make valid.
    #[arg(required = true, value_name = "DRV")]
    drvs: Vec<String>,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Add files or trees as content-addressed store paths (as `nix-store --add`);
    /// prints each path.
    Add {
        /// Files or directories to add.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show what the store knows of valid paths: NAR hash and size, references,
    /// deriver, content address.
    Info {
        /// Print JSON, as `nix path-info --json`.
        #[arg(long)]
        json: bool,
        /// Store paths.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check that every valid path exists; with --check-contents also that its
    /// NAR hash is the registered one and that it is read-only.
    Verify {
        /// Hash every valid path's contents too.
        #[arg(long)]
        check_contents: bool,
    },
    /// Serve Nix's legacy serve protocol on stdin/stdout, as `nix-store --serve`:
    /// what an `ssh://` store or remote builder runs on the login (set
    /// `remote-program` to a program that runs `hermetic store serve "$@"`). Log
    /// lines go to stderr; the caller's trust is the daemon's trust model.
    Serve {
        /// Allow adding paths and building, as `nix-store --serve --write`.
        #[arg(long)]
        write: bool,
        /// What Nix's client passes to its remote program: accepted, changes nothing.
        #[arg(long, hide = true)]
        serve: bool,
    },
    /// Print the closure of store paths under references, sorted.
    Closure {
        /// Store paths.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Copy store paths and their closures from a binary cache (`file://DIR`,
    /// `http://…`, `https://…`), as `nix copy --from`: each path signed by a key of
    /// `trusted-public-keys` (unless `require-sigs = false`) or content-addressed, its
    /// NAR checked against its narinfo. Or to a cache directory (`--to file://DIR`), as
    /// `nix copy --to`: NARs compressed with xz, narinfos signed with the keys of
    /// `secret-key-files`.
    Copy {
        /// The binary cache to copy from.
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "to",
            conflicts_with = "to"
        )]
        from: Option<String>,
        /// The binary cache directory to copy to.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Store paths.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Collect garbage, as `nix-store --gc`: delete every path that no root keeps
    /// alive (links under `<state>/gcroots` and `profiles`, temporary roots of running
    /// processes, Nix's too, and paths running processes use), under Nix's GC lock.
    Gc {
        /// Print the roots and what holds each, and delete nothing.
        #[arg(long, conflicts_with_all = ["print_live", "print_dead", "max_freed"])]
        print_roots: bool,
        /// Print the live paths, and delete nothing.
        #[arg(long, conflicts_with = "print_dead")]
        print_live: bool,
        /// Print the dead paths, and delete nothing.
        #[arg(long)]
        print_dead: bool,
        /// Stop once more than this many bytes are freed.
        #[arg(long, value_name = "BYTES")]
        max_freed: Option<u64>,
    },
    /// Delete store paths, as `nix-store --delete`: refused for a path that is
    /// still alive.
    Delete {
        /// Store paths.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the SHA-256 of a path's NAR serialisation, as
    /// `nix-hash --type sha256 --base32` does (with the `sha256:` prefix).
    Hash {
        /// Any file, symlink or directory.
        path: PathBuf,
    },
    /// Write the NAR serialisation of a path to stdout (as `nix-store --dump`).
    Dump {
        /// Any file, symlink or directory.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum DerivationCommand {
    /// Print derivations as JSON, as `nix show-derivation`.
    Show {
        /// `.drv` files (in the store or anywhere).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Add a derivation (ATerm `.drv` or `nix show-derivation` JSON) to the store,
    /// after checking its output paths; its inputs must be valid. Prints its path.
    Add {
        /// The `.drv` or `.json` file.
        file: PathBuf,
    },
}

/// `println!` that hands a write error (a closed pipe) to the caller
/// instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

/// Whether `error` comes from writing to a closed pipe (`… | head`): the
/// reader has all it wanted, so hermetic stops quietly.
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        // Over ssh (remote building), stderr is the remote user's
        // terminal: the per-connection lines stay out of it, as
        // `nix-daemon --stdio` prints none.
        Command::Daemon { stdio: true, .. } => "warn",
        Command::Daemon { .. } => "info",
        Command::Build(args) if args.verbose >= 2 => "debug",
        Command::Build(args) if args.verbose == 1 => "info",
        _ => "warn",
    };
    hermetic_cli::init_logging(cli.debug, default_level);
    match run(cli) {
        Ok(code) => code,
        Err(error) if is_closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let (Command::Build(_), Some(socket)) = (
        &cli.command,
        cli.store.as_deref().and_then(StoreLayout::daemon_socket),
    ) {
        let Command::Build(args) = cli.command else {
            unreachable!("matched above")
        };
        let request = hermetic_cli::through_daemon::Request {
            targets: &args.drvs,
            check: args.check,
            options: args.settings_given(),
            out_link: args.out_link.as_deref(),
            quiet: args.no_build_output,
            verbose: args.verbose,
        };
        return hermetic_cli::through_daemon::build(&socket, &request);
    }
    let layout = match &cli.store {
        Some(uri) => StoreLayout::from_store_uri(uri)?,
        None => StoreLayout::system(),
    };
    match cli.command {
        Command::Builtin {
            name,
            hashed_mirrors,
            netrc_file,
        } => {
            let get = |attr: &'static str| std::env::var(attr).ok();
            match name.as_str() {
                "buildenv" => {
                    for warning in hermetic_realise::builtins::buildenv::run(&get)? {
                        eprintln!("warning: {warning}");
                    }
                }
                "fetchurl" => {
                    hermetic_realise::builtins::fetchurl::run(&get, &hashed_mirrors, netrc_file)?
                }
                "unpack-channel" => hermetic_realise::builtins::unpack_channel::run(&get)?,
                other => anyhow::bail!("unsupported builtin builder '{other}'"),
            }
        }
        Command::Store(StoreCommand::Dump { path }) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            hermetic_store::nar::dump(&path, &mut out)?;
            out.flush()?;
        }
        Command::Store(StoreCommand::Hash { path }) => {
            let (hash, _) = hermetic_store::local::nar_hash_of(&path)?;
            outln!("{hash}");
        }
        Command::Store(StoreCommand::Serve { write, serve: _ }) => {
            let mut settings = hermetic_config::settings::Settings::for_caller();
            hermetic_config::nixconf::load(&mut settings, &[], &mut |w| eprintln!("warning: {w}"))?;
            hermetic_daemon::server::run_serve(layout, settings, write)?;
        }
        Command::Store(command) => store_command(layout, command)?,
        Command::Derivation(DerivationCommand::Show { paths }) => {
            let drvs = paths
                .iter()
                .map(|p| read_drv_file(&layout, p))
                .collect::<Result<Vec<_>>>()?;
            outln!("{}", json::print(&layout.store_dir, &drvs));
        }
        Command::Build(args) => return build(layout, args),
        Command::Daemon {
            socket,
            stdio,
            nix_version,
        } => {
            if nix_version {
                outln!("{}", hermetic_daemon::protocol::DAEMON_VERSION);
                return Ok(ExitCode::SUCCESS);
            }
            let mut settings = hermetic_config::settings::Settings::for_caller();
            hermetic_config::nixconf::load(&mut settings, &[], &mut |w| eprintln!("warning: {w}"))?;
            if stdio {
                hermetic_daemon::server::run_stdio(layout, settings)?;
            } else {
                let socket =
                    socket.unwrap_or_else(|| layout.state_dir.join("daemon-socket/socket"));
                hermetic_daemon::server::run(layout, settings, &socket)?;
            }
        }
        Command::Derivation(DerivationCommand::Add { file }) => {
            let drvs = read_any_drv(&layout, &file)?;
            let mut store = LocalStore::open(layout.clone())?;
            for (_, drv) in drvs {
                let path = store.add_derivation(&drv)?;
                outln!("{}", layout.store_dir.print(&path));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the collector with nix.conf's `keep-outputs` and
/// `keep-derivations`, its messages on stderr; prints what was asked for,
/// or, when it deletes, Nix's count of what it freed.
fn collect(store: &mut LocalStore, action: GcAction, max_freed: Option<u64>) -> Result<()> {
    let mut settings = hermetic_config::settings::Settings::for_caller();
    hermetic_config::nixconf::load(&mut settings, &[], &mut |w| eprintln!("warning: {w}"))?;
    let deletes = matches!(action, GcAction::DeleteDead | GcAction::DeleteSpecific(_));
    let options = GcOptions {
        max_freed: max_freed.unwrap_or(u64::MAX),
        keep_outputs: settings.keep_outputs,
        keep_derivations: settings.keep_derivations,
        ..GcOptions::new(action)
    };
    let results = store.collect_garbage(&options, &mut |line| eprintln!("{line}"))?;
    if deletes {
        outln!(
            "{} store paths deleted, {:.2} MiB freed",
            results.paths.len(),
            results.bytes_freed as f64 / (1024.0 * 1024.0)
        );
    } else {
        for path in &results.paths {
            outln!("{path}");
        }
    }
    Ok(())
}

fn store_command(layout: StoreLayout, command: StoreCommand) -> Result<()> {
    let mut store = LocalStore::open(layout.clone()).context("cannot open the store")?;
    let parse = |p: &Path| {
        layout
            .parse_user_path(p)
            .with_context(|| format!("'{}' is not a store path", p.display()))
    };
    match command {
        StoreCommand::Add { paths } => {
            for path in paths {
                let added = store
                    .add_path(&path)
                    .with_context(|| format!("cannot add '{}' to the store", path.display()))?;
                outln!("{}", layout.store_dir.print(&added));
            }
        }
        StoreCommand::Copy { from, to, paths } => {
            let mut settings = hermetic_config::settings::Settings::for_caller();
            hermetic_config::nixconf::load(&mut settings, &[], &mut |w| eprintln!("warning: {w}"))?;
            let paths = paths.iter().map(|p| parse(p)).collect::<Result<Vec<_>>>()?;
            let Some(from) = from else {
                let to = to.expect("clap requires --from or --to");
                let keys = hermetic_store::signature::read_secret_keys(&settings.secret_key_files)?;
                let cache = CacheWriter::open(&to, &layout.store_dir, keys)?;
                cache.write_closure(&store, &paths, &mut |path| {
                    eprintln!(
                        "copying path '{}' to '{}'...",
                        layout.store_dir.print(path),
                        cache.url
                    )
                })?;
                return Ok(());
            };
            let keys = hermetic_store::signature::required_keys(
                settings.require_sigs,
                &settings.trusted_public_keys,
            );
            let options = hermetic_realise::substitute::transfer_options(&settings);
            let cache = BinaryCache::open(&from, &layout.store_dir, &options, None)?;
            let url = cache.url.clone();
            let caches = Substituters::to_copy_from(cache, &layout.store_dir, keys);
            let say = |text: String| eprintln!("{text}");
            let offers = match caches.closure(&store, &paths, &say)? {
                Closure::Complete(offers) => offers,
                Closure::Incomplete { path, .. } => {
                    return Err(CacheError::Missing {
                        url,
                        path: layout.store_dir.print(&path),
                    }
                    .into());
                }
            };
            drop(store);
            let jobs = settings.max_substitution_jobs;
            let failed = caches.fetch(&layout, offers, jobs, &|| false, &|event| {
                if let Some(line) =
                    hermetic_realise::substitute::progress_of(event).text(&layout.store_dir)
                {
                    eprintln!("{line}");
                }
            });
            // Each failed fetch was told as it failed.
            if !failed.is_empty() {
                bail!("{} paths could not be copied from '{url}'", failed.len());
            }
        }
        StoreCommand::Info { json, paths } => {
            let infos = paths
                .iter()
                .map(|p| Ok(store.query_info(&parse(p)?)?))
                .collect::<Result<Vec<_>>>()?;
            if json {
                outln!("{}", path_info_json(&layout, &infos));
            } else {
                for info in infos {
                    print_info(&layout, &info)?;
                }
            }
        }
        StoreCommand::Verify { check_contents } => {
            eprintln!("checking path existence...");
            if check_contents {
                eprintln!("checking hashes...");
            }
            let report = store.verify(check_contents)?;
            for problem in &report.problems {
                eprintln!("error: {problem}");
            }
            if !report.problems.is_empty() {
                bail!(
                    "{} of {} valid paths have problems",
                    report.problems.len(),
                    report.checked
                );
            }
            eprintln!("{} valid paths checked, no problems", report.checked);
        }
        StoreCommand::Gc {
            print_roots: true, ..
        } => {
            let mut lines = BTreeSet::new();
            for (path, holders) in store.find_roots(false)? {
                for holder in holders {
                    lines.insert((holder, layout.store_dir.print(&path)));
                }
            }
            for (holder, path) in lines {
                outln!("{holder} -> {path}");
            }
        }
        StoreCommand::Gc {
            print_live,
            print_dead,
            max_freed,
            ..
        } => {
            let action = if print_live {
                GcAction::ReturnLive
            } else if print_dead {
                GcAction::ReturnDead
            } else {
                GcAction::DeleteDead
            };
            collect(&mut store, action, max_freed)?;
        }
        StoreCommand::Delete { paths } => {
            let paths = paths.iter().map(|p| parse(p)).collect::<Result<_>>()?;
            collect(&mut store, GcAction::DeleteSpecific(paths), None)?;
        }
        StoreCommand::Closure { paths } => {
            let roots = paths
                .iter()
                .map(|p| parse(p))
                .collect::<Result<Vec<StorePath>>>()?;
            for path in store.closure(&roots)? {
                outln!("{}", layout.store_dir.print(&path));
            }
        }
        StoreCommand::Dump { .. } | StoreCommand::Hash { .. } | StoreCommand::Serve { .. } => {
            unreachable!("handled without opening the store")
        }
    }
    Ok(())
}

fn print_info(layout: &StoreLayout, info: &hermetic_store::PathInfo) -> std::io::Result<()> {
    let print = |p: &StorePath| layout.store_dir.print(p);
    outln!("path:       {}", print(&info.path));
    outln!("nar-hash:   {}", info.nar_hash);
    outln!("nar-size:   {}", info.nar_size);
    let refs: Vec<String> = info.references.iter().map(print).collect();
    outln!("references: {}", refs.join(" "));
    outln!(
        "deriver:    {}",
        info.deriver.as_ref().map(print).unwrap_or_default()
    );
    outln!("ca:         {}", info.ca.as_deref().unwrap_or_default());
    Ok(())
}

fn path_info_json(layout: &StoreLayout, infos: &[hermetic_store::PathInfo]) -> String {
    let print = |p: &StorePath| layout.store_dir.print(p);
    let list: Vec<serde_json::Value> = infos
        .iter()
        .map(|info| {
            let mut json = serde_json::json!({
                "path": print(&info.path),
                "narHash": info.nar_hash.to_string(),
                "narSize": info.nar_size,
                "references": info.references.iter().map(print).collect::<Vec<_>>(),
                "deriver": info.deriver.as_ref().map(print),
                "registrationTime": info.registration_time,
                "ca": info.ca,
                "valid": true,
            });
            // As `nix path-info --json`: signatures when there are any.
            if !info.sigs.is_empty() {
                json["signatures"] = serde_json::json!(info.sigs);
            }
            json
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// A `.drv` file in the store (logical or real path) or anywhere else.
fn read_drv_file(layout: &StoreLayout, file: &Path) -> Result<(StorePath, Derivation)> {
    let (real, path) = match layout.parse_user_path(file) {
        Ok(path) => (layout.real_path(&path), path),
        Err(_) => {
            let base = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let path = StorePath::from_base_name(base).with_context(|| {
                format!("'{}' is not named like a store derivation", file.display())
            })?;
            (file.to_owned(), path)
        }
    };
    let text = std::fs::read(&real).with_context(|| format!("cannot read '{}'", real.display()))?;
    let name = path
        .name()
        .strip_suffix(".drv")
        .with_context(|| format!("'{}' is not a derivation (no '.drv')", file.display()))?;
    let drv = Derivation::from_aterm(&text, &layout.store_dir, name)
        .with_context(|| format!("cannot read derivation '{}'", file.display()))?;
    Ok((path, drv))
}

/// A file of one ATerm derivation, of `nix show-derivation` JSON, or of
/// one derivation as a JSON object with a `name` (output paths may be left
/// out: they are computed, with the store's input derivations).
fn read_any_drv(layout: &StoreLayout, file: &Path) -> Result<Vec<(StorePath, Derivation)>> {
    let text = std::fs::read(file).with_context(|| format!("cannot read '{}'", file.display()))?;
    let context = || format!("cannot read '{}'", file.display());
    if text.first() != Some(&b'{') {
        return Ok(vec![read_drv_file(layout, file)?]);
    }
    let value: serde_json::Value = serde_json::from_slice(&text).with_context(context)?;
    if value.get("outputs").is_none() {
        return json::parse(&text, &layout.store_dir).with_context(context);
    }
    let mut drv = json::parse_one(&text, &layout.store_dir).with_context(context)?;
    let store = LocalStore::open(layout.clone()).context("cannot open the store")?;
    drv.fill_output_paths(&layout.store_dir, &mut |p| store.drv_hashes(p))
        .with_context(context)?;
    let path = drv.drv_path(&layout.store_dir)?;
    Ok(vec![(path, drv)])
}

impl BuildArgs {
    /// The settings the command line gives (`--option`, `-K`, `-k`, `-j`),
    /// to apply after nix.conf.
    fn settings_given(&self) -> Vec<(String, String)> {
        let mut options = hermetic_cli::option_pairs(&self.options);
        if self.keep_failed {
            options.push(("keep-failed".into(), "true".into()));
        }
        if self.keep_going {
            options.push(("keep-going".into(), "true".into()));
        }
        if let Some(jobs) = &self.max_jobs {
            options.push(("max-jobs".into(), jobs.clone()));
        }
        options
    }
}

/// `hermetic build`: settings from nix.conf and the command line, the
/// derivations found or added, built, their outputs printed.
fn build(layout: StoreLayout, args: BuildArgs) -> Result<ExitCode> {
    use std::os::fd::AsFd;

    let options = args.settings_given();
    let mut settings = hermetic_config::settings::Settings::for_caller();
    hermetic_config::nixconf::load(&mut settings, &options, &mut |w| eprintln!("warning: {w}"))?;

    let mut store = LocalStore::open(layout.clone()).context("cannot open the store")?;
    store.reserve_space(settings.gc_reserved_space);
    let targets = build_targets(&layout, &mut store, &args.drvs)?;
    let drvs: Vec<StorePath> = targets
        .iter()
        .filter_map(|t| match t {
            Target::Build { drv, .. } => Some(drv.clone()),
            Target::Path(_) => None,
        })
        .collect();
    let paths: Vec<StorePath> = targets
        .iter()
        .filter_map(|t| match t {
            Target::Path(path) => Some(path.clone()),
            Target::Build { .. } => None,
        })
        .collect();

    // SIGINT, SIGTERM and SIGHUP end every running build cleanly: blocked
    // here (threads inherit the mask) and seen through a signalfd that every
    // build's supervisor polls.
    let cancel = hermetic_cli::interrupts_as_fd()?;
    // On a terminal, one status line (built / running / to do) below the
    // output; elsewhere a plain line per event.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let status = std::sync::Arc::new(std::sync::Mutex::new(StatusLine::new(
        std::io::stderr(),
        layout.store_dir.clone(),
    )));
    let progress = |progress: hermetic_realise::schedule::Progress| {
        if on_terminal {
            status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .progress(&progress);
        } else if let Some(line) = progress.text(&layout.store_dir) {
            eprintln!("{line}");
        }
    };
    // Store paths that are not derivations are fetched, as Nix's
    // `ensurePath` does, or refused in its words.
    hermetic_realise::substitute::substitute_paths(
        &layout,
        &settings,
        &paths,
        Some(cancel.as_fd()),
        &progress,
    )
    .map_err(|e| anyhow::anyhow!(hermetic_realise::error_chain(&e)))?;

    // With -Q the builders' output is not shown; a failure's error then
    // ends with its last lines, as Nix's does.
    let tails = std::sync::Arc::new(std::sync::Mutex::new(LogTails::new(settings.log_lines)));
    let log: hermetic_realise::log::SharedLog = if args.no_build_output {
        std::sync::Arc::new(std::sync::Mutex::new(TailsOnly(tails.clone())))
    } else if on_terminal {
        std::sync::Arc::new(std::sync::Mutex::new(AboveStatus(status.clone())))
    } else {
        std::sync::Arc::new(std::sync::Mutex::new(std::io::stderr()))
    };
    let summary = hermetic_realise::schedule::build_all(
        &layout,
        &settings,
        &drvs,
        args.check,
        Some(cancel.as_fd()),
        log,
        &progress,
    )?;
    let report = summary.failure_report(&drvs, &layout.store_dir, &|drv, failure| {
        let tails = tails.lock().unwrap_or_else(|e| e.into_inner());
        tails.describe(&layout.store_dir, drv, failure)
    });
    status.lock().unwrap_or_else(|e| e.into_inner()).finish();
    // As Nix prints an error: its lines after the first under its text.
    let indented = |text: &str| text.replace('\n', "\n       ");
    for line in &report.lines {
        eprintln!("{}", indented(line));
    }
    if let Some(error) = &report.error {
        eprintln!("error: {}", indented(error));
    }
    // Each target's outputs wanted, with the output's name, in order.
    let mut wanted: Vec<Vec<(String, StorePath)>> = Vec::new();
    for target in &targets {
        match target {
            Target::Path(path) => wanted.push(vec![("out".to_owned(), path.clone())]),
            Target::Build { drv, wanted: which } => {
                let Some(outputs) = summary.outputs.get(drv) else {
                    continue;
                };
                wanted.push(
                    outputs
                        .iter()
                        .filter(|(name, _)| which.includes(name))
                        .map(|(name, path)| (name.clone(), path.clone()))
                        .collect(),
                );
            }
        }
    }
    if let Some(out_link) = &args.out_link {
        let cwd = std::env::current_dir().context("cannot find the working directory")?;
        for (counter, outputs) in wanted.iter().enumerate() {
            for (name, path) in outputs {
                let link = hermetic_cli::build_targets::link_path(&cwd, out_link, counter, name);
                store.add_perm_root(path, &link)?;
            }
        }
    }
    // A closed pipe (`| head -1`) ends the list quietly; the builds are
    // done by now, and the exit status is still theirs.
    let mut stdout = std::io::stdout().lock();
    let printed = wanted
        .iter()
        .flatten()
        .try_for_each(|(_, path)| writeln!(stdout, "{}", layout.store_dir.print(path)));
    match printed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::from(summary.exit_code())),
    }
}

/// What one argument of `hermetic build` asks for.
enum Target {
    /// A derivation's outputs.
    Build {
        /// The derivation, in the store.
        drv: StorePath,
        /// The outputs to print and link.
        wanted: Wanted,
    },
    /// A store path to make valid.
    Path(StorePath),
}

/// Reads the arguments of `hermetic build`: derivations (added to the
/// store when they are files) with the outputs wanted, which each must
/// have (Nix's text), and store paths that are not derivations.
fn build_targets(
    layout: &StoreLayout,
    store: &mut LocalStore,
    args: &[String],
) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for arg in args {
        let (file, wanted, suffixed) = split_outputs(arg);
        let file = Path::new(file);
        let mut drvs = Vec::new();
        match layout.parse_user_path(file) {
            Ok(path) if !path.is_derivation() => {
                if suffixed {
                    bail!(
                        "'{}' is not a derivation, so it has no outputs to choose",
                        file.display()
                    );
                }
                targets.push(Target::Path(path));
                continue;
            }
            Ok(path) if store.is_valid(&path)? => drvs.push(path),
            _ => {
                for (_, drv) in read_any_drv(layout, file)? {
                    let path = store
                        .add_derivation(&drv)
                        .with_context(|| format!("cannot add '{}' to the store", file.display()))?;
                    drvs.push(path);
                }
            }
        }
        for drv in drvs {
            if let Wanted::Names(names) = &wanted {
                let has = store.read_derivation(&drv)?;
                let missing: Vec<String> = names
                    .iter()
                    .filter(|name| !has.outputs.contains_key(*name))
                    .map(|name| format!("'{name}'"))
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "derivation '{}' does not have wanted outputs {}",
                        layout.store_dir.print(&drv),
                        missing.join(", ")
                    );
                }
            }
            targets.push(Target::Build {
                drv,
                wanted: wanted.clone(),
            });
        }
    }
    Ok(targets)
}
