//! Who may connect and what they may set (SPEC section 14): the peer's
//! identity from `SO_PEERCRED` with its supplementary groups (Lix),
//! `allowed-users` and `trusted-users` (`*`, names, `@group`), members of
//! `build-users-group` refused, and the settings an untrusted client may
//! not override.

use hermetic_config::nixconf::client_rule;
use hermetic_config::settings::declaration;
use hermetic_config::settings::{ClientRule, Settings};

/// A connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its supplementary gids, as the process holds them.
    pub gids: Vec<u32>,
    /// Its user name (the uid in decimal when it has none).
    pub user: String,
    /// Its primary group's name (the gid in decimal when it has none).
    pub group: String,
    /// Its supplementary groups' names (those that have one).
    pub groups: Vec<String>,
    /// Its process id, when known (`SO_PEERCRED`).
    pub pid: Option<i32>,
}

impl Peer {
    /// The peer of a Unix socket: its ids from `SO_PEERCRED`, and the
    /// supplementary groups it really held when it connected
    /// (`SO_PEERGROUPS`), not those the group database lists for its user.
    pub fn of_socket(fd: &impl std::os::fd::AsFd) -> std::io::Result<Peer> {
        let creds = nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials)?;
        let gids = hermetic_sys::peer_groups(fd.as_fd())?;
        Ok(Peer {
            pid: Some(creds.pid()),
            ..Self::of_ids(creds.uid(), creds.gid(), gids)
        })
    }

    /// This process, as the client of `--stdio`: its own ids and groups.
    pub fn of_process() -> std::io::Result<Peer> {
        let gids = nix::unistd::getgroups()?;
        Ok(Peer {
            pid: Some(std::process::id() as i32),
            ..Self::of_ids(
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
                gids.into_iter().map(|g| g.as_raw()).collect(),
            )
        })
    }

    /// The peer with these ids, named from the user database.
    pub fn of_ids(uid: u32, gid: u32, gids: Vec<u32>) -> Peer {
        use nix::unistd::{Gid, Group, Uid, User};
        let user = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let name_of = |gid: u32| Group::from_gid(Gid::from_raw(gid)).ok().flatten();
        let group = name_of(gid).map_or_else(|| gid.to_string(), |g| g.name);
        let groups = gids
            .iter()
            .filter_map(|g| name_of(*g).map(|g| g.name))
            .collect();
        Peer {
            uid,
            gid,
            gids,
            user,
            group,
            groups,
            pid: None,
        }
    }

    /// Whether an `allowed-users` / `trusted-users` list names this peer:
    /// `*`, its name, or `@group` for its primary group, a group that lists
    /// it, or any of its supplementary groups (Lix).
    pub fn matches(&self, list: &[String]) -> bool {
        list.iter().any(|entry| {
            if entry == "*" || *entry == self.user {
                return true;
            }
            let Some(group) = entry.strip_prefix('@') else {
                return false;
            };
            if group == self.group || self.groups.iter().any(|g| g == group) {
                return true;
            }
            nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .is_some_and(|g| g.mem.contains(&self.user))
        })
    }
}

/// Why a peer may not connect (B91, B92; Lix's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not in `allowed-users` (nor trusted).
    #[error("user '{0}' is not allowed to connect to the Nix daemon")]
    NotAllowed(String),
    /// A build user.
    #[error(
        "the user '{user}' is not allowed to connect to the Nix daemon as its group is '{group}', which is the group of users running the sandboxed builds."
    )]
    BuildUser {
        /// The user.
        user: String,
        /// The build-users group.
        group: String,
    },
    /// A uid of the range `auto-allocate-uids` gives builds.
    #[error(
        "the user '{user}' is not allowed to connect to the Nix daemon as its uid {uid} is one of those the sandboxed builds run as (auto-allocate-uids)"
    )]
    BuildUid {
        /// The user.
        user: String,
        /// Its uid.
        uid: u32,
    },
}

/// Decides whether `peer` may connect, and whether it is trusted.
pub fn admit(settings: &Settings, peer: &Peer) -> Result<bool, Refused> {
    let build_group = &settings.build_users_group;
    if !build_group.is_empty() && is_build_user(build_group, peer) {
        return Err(Refused::BuildUser {
            user: peer.user.clone(),
            group: build_group.clone(),
        });
    }
    let auto =
        u64::from(settings.start_id)..u64::from(settings.start_id) + u64::from(settings.id_count);
    if settings.auto_allocate_uids && auto.contains(&u64::from(peer.uid)) {
        return Err(Refused::BuildUid {
            user: peer.user.clone(),
            uid: peer.uid,
        });
    }
    let trusted = peer.matches(&settings.trusted_users);
    if !trusted && !peer.matches(&settings.allowed_users) {
        return Err(Refused::NotAllowed(peer.user.clone()));
    }
    Ok(trusted)
}

/// Whether the peer is one of the build users of `build_group`, or holds
/// that group: by name, by gid (primary or supplementary, as the process
/// holds them), or by uid (a member of the group).
fn is_build_user(build_group: &str, peer: &Peer) -> bool {
    if peer.group == build_group || peer.groups.iter().any(|g| g == build_group) {
        return true;
    }
    let Some(group) = nix::unistd::Group::from_name(build_group).ok().flatten() else {
        return false;
    };
    let gid = group.gid.as_raw();
    peer.gid == gid
        || peer.gids.contains(&gid)
        || group.mem.iter().any(|member| {
            nix::unistd::User::from_name(member)
                .ok()
                .flatten()
                .is_some_and(|u| u.uid.as_raw() == peer.uid)
        })
}

/// What to do with a client's override of `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// Apply `value` (the client's, or the part of it the client may
    /// set), after telling the client `warnings`.
    Apply {
        /// What to set.
        value: String,
        /// What was left out, and why.
        warnings: Vec<String>,
    },
    /// Ignore it silently.
    Ignore,
    /// Ignore it with this warning.
    Warn(String),
}

/// Judges one override from a client (B94 and hermetic's root-command
/// rule); `daemon_is_root` says whether the daemon runs as root.
pub fn judge_override(
    settings: &Settings,
    trusted: bool,
    daemon_is_root: bool,
    name: &str,
    value: &str,
) -> Override {
    let restricted = || {
        Override::Warn(format!(
            "ignoring the client-specified setting '{name}', because it is a restricted setting and you are not a trusted user"
        ))
    };
    let base = name.strip_prefix("extra-").unwrap_or(name);
    match base {
        "ssh-auth-sock" | "experimental-features" | "store" => return Override::Ignore,
        "plugin-files" => {
            return Override::Warn(format!("ignoring the client-specified setting '{name}'"));
        }
        _ => {}
    }
    match client_rule(name) {
        ClientRule::RootCommand
            if !settings.allow_client_root_commands && (daemon_is_root || !trusted) =>
        {
            // An empty `builders` asks for no remote builders: harmless.
            if base == "builders" && value.is_empty() {
                return Override::Ignore;
            }
            Override::Warn(format!(
                "ignoring the client-specified setting '{name}', because it runs commands as root or picks the build users; \
                 set it in the daemon's configuration, or set 'allow-client-root-commands = true' there"
            ))
        }
        ClientRule::Anyone => apply(value),
        _ if trusted => apply(value),
        _ if declaration(name).is_some_and(|d| d.name == "substituters") => {
            allowed_substituters(settings, value)
        }
        _ => restricted(),
    }
}

/// Applies the client's `value` as it is.
fn apply(value: &str) -> Override {
    Override::Apply {
        value: value.to_owned(),
        warnings: Vec::new(),
    }
}

/// An untrusted client's `substituters` (B95): those the daemon uses
/// itself or lists in `trusted-substituters` (also when the client left off
/// the trailing slash), each other one left out with Nix's warning.
fn allowed_substituters(settings: &Settings, value: &str) -> Override {
    let trusted = |url: &str| {
        settings.substituters.iter().any(|s| s == url)
            || settings.trusted_substituters.iter().any(|s| s == url)
    };
    let mut allowed = Vec::new();
    let mut warnings = Vec::new();
    for url in value.split_whitespace() {
        let with_slash = format!("{url}/");
        if trusted(url) {
            allowed.push(url.to_owned());
        } else if !url.ends_with('/') && trusted(&with_slash) {
            allowed.push(with_slash);
        } else {
            warnings.push(format!(
                "ignoring untrusted substituter '{url}', you are not a trusted user.\n\
                 Run `man nix.conf` for more information on the `substituters` configuration option."
            ));
        }
    }
    Override::Apply {
        value: allowed.join(" "),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, group: &str, groups: &[&str]) -> Peer {
        Peer {
            uid: 1234,
            gid: 1234,
            gids: Vec::new(),
            user: user.into(),
            group: group.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            pid: None,
        }
    }

    #[test]
    fn who_may_connect() {
        let mut s = Settings::for_caller();
        s.build_users_group = "nixbld".into();
        s.allowed_users = vec!["alice".into(), "@devs".into()];
        s.trusted_users = vec!["root".into()];
        assert_eq!(admit(&s, &peer("alice", "users", &[])), Ok(false));
        assert_eq!(admit(&s, &peer("bob", "users", &["devs"])), Ok(false));
        assert_eq!(admit(&s, &peer("root", "root", &[])), Ok(true));
        assert_eq!(
            admit(&s, &peer("eve", "users", &[]))
                .unwrap_err()
                .to_string(),
            "user 'eve' is not allowed to connect to the Nix daemon"
        );
        assert_eq!(
            admit(&s, &peer("nixbld1", "users", &["nixbld"]))
                .unwrap_err()
                .to_string(),
            "the user 'nixbld1' is not allowed to connect to the Nix daemon as its group is 'nixbld', \
             which is the group of users running the sandboxed builds."
        );
    }

    #[test]
    fn uids_builds_run_as_may_not_connect() {
        let mut s = Settings::for_caller();
        s.build_users_group = String::new();
        s.auto_allocate_uids = true;
        s.start_id = 1000;
        s.id_count = 500;
        let mut p = peer("builder", "users", &[]);
        p.uid = 1234;
        assert_eq!(
            admit(&s, &p),
            Err(Refused::BuildUid {
                user: "builder".into(),
                uid: 1234
            })
        );
        p.uid = 1500;
        assert_eq!(admit(&s, &p), Ok(false));
    }

    #[test]
    fn what_clients_may_set() {
        let s = Settings::for_caller();
        assert_eq!(judge_override(&s, false, true, "timeout", "5"), apply("5"));
        assert_eq!(judge_override(&s, false, true, "build-timeout", "5"), Override::Warn(
            "ignoring the client-specified setting 'build-timeout', because it is a restricted setting and you are not a trusted user".into()
        ));
        assert!(matches!(
            judge_override(&s, false, true, "sandbox", "false"),
            Override::Warn(_)
        ));
        assert_eq!(
            judge_override(&s, true, true, "sandbox", "false"),
            apply("false")
        );
        assert!(matches!(
            judge_override(&s, true, true, "post-build-hook", "/bin/evil"),
            Override::Warn(_)
        ));
        // A daemon that is not root runs hooks as its own user: its
        // trusted clients may set them, its untrusted ones not.
        assert_eq!(
            judge_override(&s, true, false, "post-build-hook", "/bin/hook"),
            apply("/bin/hook")
        );
        assert!(matches!(
            judge_override(&s, false, false, "post-build-hook", "/bin/hook"),
            Override::Warn(_)
        ));
        assert_eq!(
            judge_override(&s, false, true, "experimental-features", "x"),
            Override::Ignore
        );
        // The switch itself is the daemon's to set: a trusted client of a
        // root daemon may not open the door to root commands for itself.
        assert!(matches!(
            judge_override(&s, true, true, "allow-client-root-commands", "true"),
            Override::Warn(_)
        ));
        assert_eq!(
            judge_override(&s, false, true, "connect-timeout", "5"),
            apply("5")
        );
    }

    #[test]
    fn an_untrusted_client_gets_only_the_substituters_the_daemon_trusts() {
        let mut s = Settings::for_caller();
        s.substituters = vec!["file:///srv/cache".into()];
        s.trusted_substituters = vec!["http://cache.local/".into()];
        let Override::Apply { value, warnings } = judge_override(
            &s,
            false,
            true,
            "substituters",
            "http://cache.local file:///srv/cache http://evil.example",
        ) else {
            panic!("substituters are judged one by one");
        };
        assert_eq!(value, "http://cache.local/ file:///srv/cache");
        assert_eq!(
            warnings,
            [
                "ignoring untrusted substituter 'http://evil.example', you are not a trusted user.\n\
              Run `man nix.conf` for more information on the `substituters` configuration option."
            ]
        );
        // The alias is judged the same way; a trusted client sets any.
        assert!(matches!(
            judge_override(&s, false, true, "binary-caches", "http://evil.example"),
            Override::Apply { value, .. } if value.is_empty()
        ));
        assert_eq!(
            judge_override(&s, true, true, "substituters", "http://evil.example"),
            apply("http://evil.example")
        );
        // trusted-substituters itself is not the client's to widen.
        assert!(matches!(
            judge_override(
                &s,
                false,
                true,
                "trusted-substituters",
                "http://evil.example"
            ),
            Override::Warn(_)
        ));
    }
}
