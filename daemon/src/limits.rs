//! How many clients the daemon serves at once, so that one local user
//! cannot take every thread or descriptor from the others: a cap per user,
//! a cap in all, and a small pool for telling refused clients why. Root is
//! never refused, so that an administrator can always get in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The daemon's limits on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections one user (other than root) may hold at once.
    pub per_user: usize,
    /// Connections of users other than root, all together.
    pub total: usize,
    /// Refused clients told why at once; more are hung up on unanswered.
    pub refusals: usize,
    /// How long a client has to greet before it is hung up on.
    pub handshake: Duration,
}

impl ConnectionLimits {
    /// The defaults: 512 in all, a quarter of that (at most 64) per user,
    /// 8 refusals, 10 seconds to greet. The total shrinks to what
    /// `descriptors` (the daemon's limit on open files) can carry: a
    /// connection holds up to 8 while it builds, and 64 stay for the
    /// daemon itself.
    pub fn for_descriptors(descriptors: u64) -> ConnectionLimits {
        let carried = usize::try_from(descriptors.saturating_sub(64) / 8).unwrap_or(usize::MAX);
        let total = carried.clamp(1, 512);
        ConnectionLimits {
            per_user: (total / 4).clamp(1, 64),
            total,
            refusals: 8,
            handshake: Duration::from_secs(10),
        }
    }
}

/// What the daemon does with a new connection.
#[derive(Debug)]
pub enum Entry {
    /// Serve it; the slot is freed when the ticket is dropped.
    Serve(Ticket),
    /// Greet it, tell it why it is refused (the message), and hang up; the
    /// refusal slot is freed when the ticket is dropped.
    Refuse(Ticket, String),
    /// Hang up at once: too many refusals are under way. The message says
    /// why, for the daemon's log.
    HangUp(String),
}

/// Counts the connections the daemon holds.
#[derive(Debug, Clone)]
pub struct ConnectionCounter {
    limits: ConnectionLimits,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    per_user: BTreeMap<u32, usize>,
    total: usize,
    refusals: usize,
}

/// A held slot: a connection's, or a refusal's.
#[derive(Debug)]
pub struct Ticket {
    counts: Arc<Mutex<Counts>>,
    slot: Slot,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Root,
    User(u32),
    Refusal,
}

impl ConnectionCounter {
    /// A counter with nothing held.
    pub fn new(limits: ConnectionLimits) -> ConnectionCounter {
        ConnectionCounter {
            limits,
            counts: Arc::default(),
        }
    }

    /// The limits it keeps.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Takes a slot for a connection from `uid` (named `user`), or says
    /// why there is none.
    pub fn enter(&self, uid: u32, user: &str) -> Entry {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = |slot| Ticket {
            counts: self.counts.clone(),
            slot,
        };
        if uid == 0 {
            return Entry::Serve(ticket(Slot::Root));
        }
        let held = counts.per_user.get(&uid).copied().unwrap_or(0);
        let refused = if held >= self.limits.per_user {
            format!(
                "user '{user}' already has {held} connections to the daemon, the most one user may have"
            )
        } else if counts.total >= self.limits.total {
            format!(
                "the daemon already serves {} connections, the most it takes; try again later",
                counts.total
            )
        } else {
            *counts.per_user.entry(uid).or_default() += 1;
            counts.total += 1;
            return Entry::Serve(ticket(Slot::User(uid)));
        };
        if counts.refusals >= self.limits.refusals {
            return Entry::HangUp(refused);
        }
        counts.refusals += 1;
        Entry::Refuse(ticket(Slot::Refusal), refused)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match self.slot {
            Slot::Root => {}
            Slot::Refusal => counts.refusals -= 1,
            Slot::User(uid) => {
                counts.total -= 1;
                if let Some(held) = counts.per_user.get_mut(&uid) {
                    *held -= 1;
                    if *held == 0 {
                        counts.per_user.remove(&uid);
                    }
                }
            }
        }
    }
}

/// This process's limit on open files (the soft limit; 1,024 when it
/// cannot be read). The daemon does not raise it, so that builders start
/// with the limit it was given; the systemd unit sets it.
pub fn descriptor_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: usize, total: usize, refusals: usize) -> ConnectionLimits {
        ConnectionLimits {
            per_user,
            total,
            refusals,
            handshake: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_user_is_capped_and_others_still_get_in() {
        let counter = ConnectionCounter::new(limits(2, 10, 1));
        let held: Vec<_> = (0..2).map(|_| counter.enter(1000, "eve")).collect();
        assert!(held.iter().all(|e| matches!(e, Entry::Serve(_))));
        let Entry::Refuse(_refusal, why) = counter.enter(1000, "eve") else {
            panic!("the third connection was not refused");
        };
        assert!(
            why.contains("user 'eve' already has 2 connections"),
            "{why}"
        );
        assert!(matches!(counter.enter(1000, "eve"), Entry::HangUp(_)));
        assert!(matches!(counter.enter(1001, "bob"), Entry::Serve(_)));
    }

    #[test]
    fn the_total_is_capped_but_never_for_root() {
        let counter = ConnectionCounter::new(limits(5, 2, 4));
        let _a = counter.enter(1000, "a");
        let _b = counter.enter(1001, "b");
        assert!(matches!(counter.enter(1002, "c"), Entry::Refuse(..)));
        assert!(matches!(counter.enter(0, "root"), Entry::Serve(_)));
    }

    #[test]
    fn slots_come_back_when_connections_end() {
        let counter = ConnectionCounter::new(limits(1, 1, 1));
        let first = counter.enter(1000, "eve");
        let refused = counter.enter(1000, "eve");
        assert!(matches!(refused, Entry::Refuse(..)));
        drop((first, refused));
        let again = counter.enter(1000, "eve");
        assert!(matches!(again, Entry::Serve(_)));
        assert!(matches!(counter.enter(1000, "eve"), Entry::Refuse(..)));
    }

    #[test]
    fn the_total_follows_the_descriptor_limit() {
        assert_eq!(ConnectionLimits::for_descriptors(1024).total, 120);
        assert_eq!(ConnectionLimits::for_descriptors(1024).per_user, 30);
        assert_eq!(ConnectionLimits::for_descriptors(1 << 20).per_user, 64);
        assert_eq!(ConnectionLimits::for_descriptors(100).total, 4);
        assert_eq!(ConnectionLimits::for_descriptors(1 << 20).total, 512);
        assert_eq!(ConnectionLimits::for_descriptors(0).total, 1);
        assert_eq!(ConnectionLimits::for_descriptors(0).per_user, 1);
    }
}
