//! Id maps of a sandbox's user namespace (SPEC B18, B20).
//!
//! A sandbox's user namespace maps one uid and one gid: the builder is uid
//! 1000 and gid 100 inside (`nixbld`), and a host id outside — the build
//! user when hermetic runs as root, the caller's own ids otherwise. A
//! uid-range build maps 65536 ids from 0 (B19). [`pool`] hands out build
//! users and holds their locks.

pub mod pool;

use serde::Serialize;

/// The uid a sandboxed builder has inside its user namespace.
pub const SANDBOX_UID: u32 = 1000;
/// The gid a sandboxed builder has inside its user namespace.
pub const SANDBOX_GID: u32 = 100;

/// One line of an id map: `count` ids from `inside` map to ids from
/// `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

impl IdRange {
    /// One id mapped to one id.
    pub fn single(inside: u32, outside: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count: 1,
        }
    }

    /// The line written to `/proc/<pid>/uid_map` or `gid_map`.
    pub fn render(&self) -> String {
        format!("{} {} {}\n", self.inside, self.outside, self.count)
    }
}

/// The uid and gid maps of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SandboxIds {
    /// The uid map.
    pub uid: IdRange,
    /// The gid map.
    pub gid: IdRange,
}

impl SandboxIds {
    /// An ordinary build: host `uid`/`gid` shown as 1000/100 inside.
    pub fn ordinary(host_uid: u32, host_gid: u32) -> SandboxIds {
        SandboxIds {
            uid: IdRange::single(SANDBOX_UID, host_uid),
            gid: IdRange::single(SANDBOX_GID, host_gid),
        }
    }

    /// A uid-range build: 65536 ids from host `first_uid`/`first_gid`
    /// mapped from 0, so the builder is root of its own user namespace.
    pub fn range(first_uid: u32, first_gid: u32) -> SandboxIds {
        SandboxIds {
            uid: IdRange {
                inside: 0,
                outside: first_uid,
                count: pool::RANGE_SIZE,
            },
            gid: IdRange {
                inside: 0,
                outside: first_gid,
                count: pool::RANGE_SIZE,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_maps_start_at_zero() {
        let ids = SandboxIds::range(872415232, 872415232);
        assert_eq!(ids.uid.render(), "0 872415232 65536\n");
        assert_eq!(ids.gid.render(), "0 872415232 65536\n");
    }

    #[test]
    fn ordinary_maps_are_one_line_each() {
        let ids = SandboxIds::ordinary(30001, 30000);
        assert_eq!(ids.uid.render(), "1000 30001 1\n");
        assert_eq!(ids.gid.render(), "100 30000 1\n");
    }
}
