//! What the binaries share.

pub mod build_targets;
pub mod doctor_config;
pub mod status_line;
pub mod through_daemon;

/// `--option NAME VALUE` as clap collects it (a flat list), as pairs.
pub fn option_pairs(options: &[String]) -> Vec<(String, String)> {
    options
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect()
}

/// Logs to stderr: debug lines with `--debug`, else the level in
/// `HERMETIC_LOG`, else `default_level` (`warn` for commands, `info` for
/// the daemon, whose log says what it does). Colour only on a terminal.
pub fn init_logging(debug: bool, default_level: &str) {
    use std::io::IsTerminal;
    let filter = if debug {
        "debug".to_owned()
    } else {
        std::env::var("HERMETIC_LOG").unwrap_or_else(|_| default_level.to_owned())
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (threads started
/// later inherit the mask) and returns a signalfd that becomes readable
/// when one arrives: what a supervisor polls to end its sandboxes cleanly
/// (kill, unmount, remove scratch space) before the program exits.
pub fn interrupts_as_fd() -> anyhow::Result<nix::sys::signalfd::SignalFd> {
    use anyhow::Context;
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).context("blocking signals")?;
    SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("listening for signals")
}

/// The phase table of `--timings`: for each point reached, in time order,
/// the microseconds since the point before and what happened in between.
pub fn phase_table(readings: &[(hermetic_sys::phase_clock::Point, u64)]) -> String {
    let mut table = String::from("phases of this run (µs since the point before):\n");
    let Some(&(_, first)) = readings.first() else {
        return table;
    };
    let mut before = first;
    for &(point, at) in readings {
        table += &format!(
            "{:>10.1} µs  {}\n",
            at.saturating_sub(before) as f64 / 1e3,
            point.phase()
        );
        before = at;
    }
    let last = readings.last().map_or(first, |&(_, at)| at);
    table += &format!(
        "{:>10.1} µs  in all\n",
        last.saturating_sub(first) as f64 / 1e3
    );
    // For a caller that times the process from outside (scripts/bench).
    table += &format!("CLOCK_MONOTONIC at the first point {first} ns, at the last {last} ns\n");
    table
}
