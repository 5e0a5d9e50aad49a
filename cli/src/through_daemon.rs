//! `hermetic build --store daemon` (or `unix://SOCKET`): the builds asked
//! for, made by a daemon — hermetic's or Nix's — as Nix's client asks for
//! them: the settings (`SetOptions`), each derivation's outputs
//! (`QueryDerivationOutputMap`), the builds (`BuildPaths`), and for `-o`
//! links the daemon's collector respects (`AddIndirectRoot`). The daemon's
//! messages and the builders' log lines are printed as they come.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hermetic_config::settings::Settings;
use hermetic_remote::client::{ClientError, ClientOptions, DaemonClient, Said};
use hermetic_store::StoreLayout;

use crate::build_targets::{Wanted, link_path, split_outputs};

/// What `hermetic build` was asked, for a daemon to do.
pub struct Request<'a> {
    /// The arguments: derivations in the daemon's store with the outputs
    /// wanted, or store paths to make valid.
    pub targets: &'a [String],
    /// Build again and compare (`--check`).
    pub check: bool,
    /// Settings given on the command line (`--option`, `-K`, `-k`, `-j`),
    /// after nix.conf; they go to the daemon too.
    pub options: Vec<(String, String)>,
    /// `-o LINK`.
    pub out_link: Option<&'a Path>,
    /// `-Q`: the builders' output is not shown.
    pub quiet: bool,
    /// `-v` given this many times.
    pub verbose: u8,
}

/// One argument: what is sent, and the outputs printed and linked.
struct Target {
    /// The derived path as the protocol writes it.
    sent: String,
    /// The outputs printed, by name.
    outputs: Vec<(String, String)>,
}

/// Builds through the daemon at `socket`; the exit status is Nix's client's
/// (1 when the daemon reports a failure).
pub fn build(socket: &Path, request: &Request<'_>) -> Result<ExitCode> {
    let mut settings = Settings::for_caller();
    hermetic_config::nixconf::load(&mut settings, &request.options, &mut |w| {
        eprintln!("warning: {w}")
    })?;
    let mut client = DaemonClient::connect(socket)?;
    // What the daemon says keeps its colours on a terminal only, as Nix's
    // client prints it.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let shown = |text: &str| {
        if on_terminal {
            text.to_owned()
        } else {
            without_colours(text)
        }
    };
    let quiet = request.quiet;
    let mut said = |said: Said| match said {
        Said::Line(line) | Said::Started(line) => eprintln!("{}", shown(&line)),
        Said::BuildLog(line) if !quiet => eprintln!("{}", shown(&line)),
        Said::BuildLog(_) => {}
    };
    let options = ClientOptions {
        keep_failed: settings.keep_failed,
        keep_going: settings.keep_going,
        fallback: settings.fallback,
        // Nix's lvlInfo, and one more per -v.
        verbosity: 3 + u64::from(request.verbose),
        build_output: !request.quiet,
        max_jobs: settings.max_jobs as u64,
        max_silent_time: settings.max_silent_time,
        cores: settings.cores as u64,
        substitute: settings.substitute,
        overrides: request.options.clone(),
    };
    client.set_options(&options, &mut said)?;

    let layout = StoreLayout::system();
    let mut targets = Vec::new();
    for arg in request.targets {
        let (file, wanted, suffixed) = split_outputs(arg);
        let path = layout.parse_user_path(Path::new(file)).map_err(|_| {
            anyhow::anyhow!(
                "'{file}' is not a path in the store '{}': through a daemon, hermetic build takes \
                 store paths; add it to the daemon's store first (nix-instantiate, nix-store --add)",
                layout.store_dir.as_str()
            )
        })?;
        let printed = layout.store_dir.print(&path);
        if !path.is_derivation() {
            if suffixed {
                bail!("'{printed}' is not a derivation, so it has no outputs to choose");
            }
            targets.push(Target {
                sent: printed.clone(),
                outputs: vec![("out".to_owned(), printed)],
            });
            continue;
        }
        let all = client.derivation_outputs(&printed, &mut said)?;
        if let Wanted::Names(names) = &wanted {
            let missing: Vec<String> = names
                .iter()
                .filter(|name| !all.contains_key(*name))
                .map(|name| format!("'{name}'"))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "derivation '{printed}' does not have wanted outputs {}",
                    missing.join(", ")
                );
            }
        }
        let outputs: Vec<(String, String)> = all
            .into_iter()
            .filter(|(name, _)| wanted.includes(name))
            .collect();
        let names: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
        targets.push(Target {
            sent: format!("{printed}!{}", names.join(",")),
            outputs,
        });
    }

    let sent: Vec<String> = targets.iter().map(|t| t.sent.clone()).collect();
    match client.build_paths(&sent, request.check, &mut said) {
        Ok(()) => {}
        Err(ClientError::Daemon(message)) => {
            // As Nix prints an error: its further lines under its text.
            eprintln!("error: {}", shown(&message).replace('\n', "\n       "));
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(out_link) = request.out_link {
        let cwd = std::env::current_dir().context("cannot find the working directory")?;
        for (counter, target) in targets.iter().enumerate() {
            for (name, printed) in &target.outputs {
                let path = layout.parse_user_path(Path::new(printed)).map_err(|_| {
                    anyhow::anyhow!(
                        "the daemon named output '{name}' '{printed}', not a store path"
                    )
                })?;
                let link: PathBuf = link_path(&cwd, out_link, counter, name);
                let link = hermetic_store::local::roots::make_root_link(&layout, &path, &link)?;
                client.add_indirect_root(&link, &mut said)?;
            }
        }
    }
    // A closed pipe ends the list quietly; the builds are done by now.
    let mut stdout = std::io::stdout().lock();
    let printed = targets
        .iter()
        .flat_map(|t| &t.outputs)
        .try_for_each(|(_, path)| writeln!(stdout, "{path}"));
    match printed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `text` without its ANSI control sequences (`ESC [ … final`), as Nix's
/// client shows a daemon's messages off a terminal.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte.
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_colours;

    #[test]
    fn colours_come_off() {
        assert_eq!(
            without_colours("error: builder for '\x1b[35;1m/nix/store/x.drv\x1b[0m' failed"),
            "error: builder for '/nix/store/x.drv' failed"
        );
        assert_eq!(without_colours("plain [text]"), "plain [text]");
    }
}
