//! The worker protocol as the daemon speaks it: the versions it serves,
//! Nix's operation names, and the messages of the stderr channel it sends
//! (log lines, activities, the end of an operation's work, an error).

use std::io::{self, Write};

use crate::wire::{write_string, write_u64};

pub use hermetic_remote::protocol::{
    STDERR_ERROR, STDERR_LAST, STDERR_NEXT, STDERR_RESULT, STDERR_START_ACTIVITY,
    STDERR_STOP_ACTIVITY, WORKER_MAGIC_1, WORKER_MAGIC_2, activity, minor, result,
};

/// The newest protocol version hermetic speaks: 1.38, today's Nix's (Nix
/// 2.8 speaks 1.34, Lix 1.35). A connection speaks the older of this and
/// the client's.
pub const PROTOCOL_VERSION: u64 = (1 << 8) | 38;
/// The oldest client version served: 1.10, as Nix's daemon.
pub const OLDEST_CLIENT_VERSION: u64 = (1 << 8) | 10;

/// hermetic's own opening of a connection to its daemon, instead of the
/// worker protocol's magic: a `store serve` run by a user who cannot open
/// the store asks the daemon for a serve-protocol session, which the
/// daemon runs with that user's trust (from the socket). The magic, then
/// the `--write` flag (0 or 1), 16 bytes carrying the caller's stderr
/// (`SCM_RIGHTS`), where the session's log lines go; then the serve
/// protocol, relayed byte for byte.
pub const SERVE_SESSION_MAGIC: u64 = 0x6865_726d_7365_7276;

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
