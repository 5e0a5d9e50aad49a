//! The worker protocol's constants, which both its ends use: the
//! greetings, the stderr channel's messages (while an operation works, the
//! daemon may send log lines, `STDERR_NEXT`; it ends with `STDERR_LAST`,
//! or `STDERR_ERROR` and the error, before the reply), Nix's activity and
//! result types.

/// The client's greeting.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// The daemon's answer.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;
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

/// The serve protocol's (`nix-store --serve`) greeting by the client.
pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;
/// The serve protocol's answer.
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;
/// The serve protocol's version hermetic speaks, both ends: 2.7, Nix
/// 2.8's; today's Nix speaks the older of its own and the other end's.
pub const SERVE_VERSION: u64 = (2 << 8) | 7;

/// The minor version of a protocol version (either protocol).
pub fn minor(version: u64) -> u64 {
    version & 0xff
}
