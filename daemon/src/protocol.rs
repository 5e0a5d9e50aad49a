//! The worker protocol's constants and its stderr channel: while an
//! operation works, the daemon may send log lines (`STDERR_NEXT`); it ends
//! with `STDERR_LAST`, or `STDERR_ERROR` and the error, before the reply.

use std::io::{self, Write};

use crate::wire::{write_string, write_u64};

/// The client's greeting.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// The daemon's answer.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// The newest protocol version hermetic speaks: 1.38, today's Nix's (Nix
/// 2.8 speaks 1.34, Lix 1.35). A connection speaks the older of this and
/// the client's.
pub const PROTOCOL_VERSION: u64 = (1 << 8) | 38;
/// The oldest client version served: 1.10, as Nix's daemon.
pub const OLDEST_CLIENT_VERSION: u64 = (1 << 8) | 10;
/// A log line.
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
/// The operation's work is done; the reply follows.
pub const STDERR_LAST: u64 = 0x616c_7473;
/// The operation failed; the error follows.
pub const STDERR_ERROR: u64 = 0x6378_7470;
/// An activity starts (protocol 1.20 and later).
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
/// An activity ends.
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
/// An activity's result: a log line, its progress.
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Nix's activity types hermetic reports (`ActivityType`).
pub mod activity {
    /// All the builds of an operation; its progress counts them.
    pub const BUILDS: u64 = 104;
    /// One derivation's build.
    pub const BUILD: u64 = 105;
    /// One path copied between stores (from a substituter).
    pub const COPY_PATH: u64 = 100;
}

/// Nix's result types hermetic reports (`ResultType`).
pub mod result {
    /// A line of a builder's log.
    pub const BUILD_LOG_LINE: u64 = 101;
    /// Done, expected, running and failed counts.
    pub const PROGRESS: u64 = 105;
}

/// A field of an activity or a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// A number.
    Int(u64),
    /// A string.
    Str(&'a str),
}

fn write_fields(to: &mut impl Write, fields: &[Field<'_>]) -> io::Result<()> {
    write_u64(to, fields.len() as u64)?;
    for field in fields {
        match field {
            Field::Int(n) => {
                write_u64(to, 0)?;
                write_u64(to, *n)?;
            }
            Field::Str(s) => {
                write_u64(to, 1)?;
                write_string(to, s)?;
            }
        }
    }
    Ok(())
}

/// Starts activity `id` of `kind` (`activity::…`), at Nix's info level,
/// under `parent` (0 for none).
pub fn send_start_activity(
    to: &mut impl Write,
    id: u64,
    kind: u64,
    text: &str,
    fields: &[Field<'_>],
    parent: u64,
) -> io::Result<()> {
    write_u64(to, STDERR_START_ACTIVITY)?;
    write_u64(to, id)?;
    write_u64(to, 3)?; // lvlInfo
    write_u64(to, kind)?;
    write_string(to, text)?;
    write_fields(to, fields)?;
    write_u64(to, parent)?;
    to.flush()
}

/// Ends activity `id`.
pub fn send_stop_activity(to: &mut impl Write, id: u64) -> io::Result<()> {
    write_u64(to, STDERR_STOP_ACTIVITY)?;
    write_u64(to, id)?;
    to.flush()
}

/// A result of `kind` (`result::…`) for activity `id`.
pub fn send_result(
    to: &mut impl Write,
    id: u64,
    kind: u64,
    fields: &[Field<'_>],
) -> io::Result<()> {
    write_u64(to, STDERR_RESULT)?;
    write_u64(to, id)?;
    write_u64(to, kind)?;
    write_fields(to, fields)?;
    to.flush()
}

/// The version a connection speaks: the older of the client's and ours.
pub fn negotiate(client_version: u64) -> u64 {
    client_version.min(PROTOCOL_VERSION)
}

/// The version the daemon tells clients: the Nix whose behaviour it
/// reproduces (SPEC's reading of Nix 2.8), then hermetic's own, so that
/// clients and Nix's tests comparing versions see a 2.8-level daemon.
pub const DAEMON_VERSION: &str = concat!("2.8.0-hermetic-", env!("CARGO_PKG_VERSION"));

/// The minor version of a protocol version.
pub fn minor(version: u64) -> u64 {
    version & 0xff
}

/// The worker operations, by number, with Nix's names.
pub fn op_name(op: u64) -> &'static str {
    match op {
        1 => "IsValidPath",
        3 => "HasSubstitutes",
        4 => "QueryPathHash",
        5 => "QueryReferences",
        6 => "QueryReferrers",
        7 => "AddToStore",
        8 => "AddTextToStore",
        9 => "BuildPaths",
        10 => "EnsurePath",
        11 => "AddTempRoot",
        12 => "AddIndirectRoot",
        13 => "SyncWithGC",
        14 => "FindRoots",
        16 => "ExportPath",
        18 => "QueryDeriver",
        19 => "SetOptions",
        20 => "CollectGarbage",
        21 => "QuerySubstitutablePathInfo",
        22 => "QueryDerivationOutputs",
        23 => "QueryAllValidPaths",
        24 => "QueryFailedPaths",
        25 => "ClearFailedPaths",
        26 => "QueryPathInfo",
        27 => "ImportPaths",
        28 => "QueryDerivationOutputNames",
        29 => "QueryPathFromHashPart",
        30 => "QuerySubstitutablePathInfos",
        31 => "QueryValidPaths",
        32 => "QuerySubstitutablePaths",
        33 => "QueryValidDerivers",
        34 => "OptimiseStore",
        35 => "VerifyStore",
        36 => "BuildDerivation",
        37 => "AddSignatures",
        38 => "NarFromPath",
        39 => "AddToStoreNar",
        40 => "QueryMissing",
        41 => "QueryDerivationOutputMap",
        42 => "RegisterDrvOutput",
        43 => "QueryRealisation",
        44 => "AddMultipleToStore",
        45 => "AddBuildLog",
        46 => "BuildPathsWithResults",
        47 => "AddPermRoot",
        _ => "unknown",
    }
}

/// Sends a log line.
pub fn send_log(to: &mut impl Write, line: &str) -> io::Result<()> {
    write_u64(to, STDERR_NEXT)?;
    write_string(to, &format!("{line}\n"))?;
    to.flush()
}

/// Ends an operation's work successfully.
pub fn send_last(to: &mut impl Write) -> io::Result<()> {
    write_u64(to, STDERR_LAST)
}

/// Ends an operation's work with an error, in the form of protocol 1.26
/// and later: type, level, name, message, no position, no traces.
pub fn send_error(to: &mut impl Write, message: &str) -> io::Result<()> {
    write_u64(to, STDERR_ERROR)?;
    write_string(to, "Error")?;
    write_u64(to, 0)?; // lvlError
    write_string(to, "Error")?;
    write_string(to, message)?;
    write_u64(to, 0)?; // no position
    write_u64(to, 0)?; // no traces
    to.flush()
}
