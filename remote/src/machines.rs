//! The machines of Nix's `builders` setting, in Nix's machine format, and
//! the choice of one for a derivation as Nix's `build-remote` makes it.
//!
//! `builders` is a list of machines separated by newlines or `;`, `#`
//! starting a comment; `@FILE` reads more from a file (a missing one is
//! no machine). Each machine is fields separated by blanks, `-` or an
//! absent field taking the default: store URI (`user@host` means
//! `ssh://user@host`), systems (comma-separated; this machine's system),
//! SSH key (none), max jobs (1), speed factor (1), supported features,
//! mandatory features, base64 SSH host key.

use std::collections::BTreeSet;

/// One build machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Its store URI (`ssh-ng://user@host?remote-program=…`).
    pub store_uri: String,
    /// The systems it builds for.
    pub systems: Vec<String>,
    /// The SSH private key to log in with, if any.
    pub ssh_key: Option<String>,
    /// How many builds it takes at once.
    pub max_jobs: u64,
    /// How much faster than the others it is (at least 1).
    pub speed_factor: f64,
    /// The features it offers to derivations that ask for them.
    pub supported_features: BTreeSet<String>,
    /// The features a derivation must ask for to be built there.
    pub mandatory_features: BTreeSet<String>,
    /// Its SSH host key, base64-encoded, if given.
    pub host_key: Option<String>,
}

/// A `builders` text that is not Nix's machine format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad machine specification '{line}': {problem}")]
pub struct MachineError {
    /// The machine's line.
    pub line: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Parses `builders` (`this_system` for machines that name none); `read`
/// gives the text of an `@FILE`, `None` when there is no such file.
pub fn parse(
    text: &str,
    this_system: &str,
    read: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Vec<Machine>, MachineError> {
    let mut machines = Vec::new();
    parse_into(text, this_system, read, &mut machines, 0)?;
    Ok(machines)
}

fn parse_into(
    text: &str,
    this_system: &str,
    read: &mut dyn FnMut(&str) -> Option<String>,
    machines: &mut Vec<Machine>,
    depth: usize,
) -> Result<(), MachineError> {
    for line in text.split(['\n', ';']) {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(file) = line.strip_prefix('@') {
            let file = file.trim();
            if depth > 8 {
                return Err(MachineError {
                    line: line.to_owned(),
                    problem: "machine files include each other too deeply".into(),
                });
            }
            if let Some(more) = read(file) {
                parse_into(&more, this_system, read, machines, depth + 1)?;
            }
            continue;
        }
        machines.push(machine(line, this_system)?);
    }
    Ok(())
}

fn machine(line: &str, this_system: &str) -> Result<Machine, MachineError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n)
            .copied()
            .filter(|f| !f.is_empty() && *f != "-")
    };
    let list = |n: usize| -> BTreeSet<String> {
        field(n)
            .map(|f| {
                f.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let bad = |problem: String| MachineError {
        line: line.to_owned(),
        problem,
    };
    let uri = fields[0];
    // Nix's rule: a bare `user@host` is an ssh:// store.
    let special = ["auto", "daemon", "local"];
    let store_uri = if uri.contains("://")
        || uri.contains('/')
        || special.contains(&uri)
        || special
            .iter()
            .any(|word| uri.starts_with(&format!("{word}?")))
        || uri.starts_with('?')
    {
        uri.to_owned()
    } else {
        format!("ssh://{uri}")
    };
    let max_jobs = match field(3) {
        Some(text) => text
            .parse()
            .map_err(|_| bad(format!("the maximum of jobs '{text}' is not a number")))?,
        None => 1,
    };
    let speed_factor: f64 = match field(4) {
        Some(text) => text
            .parse()
            .ok()
            .filter(|f: &f64| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| bad(format!("the speed factor '{text}' is not a number")))?,
        None => 1.0,
    };
    Ok(Machine {
        store_uri,
        systems: match field(1) {
            Some(systems) => systems.split(',').map(str::to_owned).collect(),
            None => vec![this_system.to_owned()],
        },
        ssh_key: field(2).map(str::to_owned),
        max_jobs,
        speed_factor: speed_factor.max(1.0),
        supported_features: list(5),
        mandatory_features: list(6),
        host_key: field(7).map(str::to_owned),
    })
}

impl Machine {
    /// Whether it builds a derivation for `system` that asks for
    /// `features`: the system is one of its own (any, for `builtin`), it
    /// offers every feature asked for, and every mandatory one is asked for.
    pub fn fits(&self, system: &str, features: &BTreeSet<String>) -> bool {
        (system == "builtin" || self.systems.iter().any(|s| s == system))
            && features
                .iter()
                .all(|f| self.supported_features.contains(f) || self.mandatory_features.contains(f))
            && self.mandatory_features.is_subset(features)
    }
}

/// What Nix's `build-remote` decides for one derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Build on the machine at this index.
    Machine(usize),
    /// Machines fit, but none has a free slot.
    AllBusy,
    /// No machine fits.
    NoneFits,
}

/// Picks the machine for a derivation for `system` asking for `features`:
/// of those that fit, are not `disabled` and have a free slot (`busy[i]`
/// builds running on machine `i`), the least loaded for its speed, then
/// the faster, then the less loaded (Nix's order).
pub fn choose(
    machines: &[Machine],
    busy: &[u64],
    disabled: &BTreeSet<usize>,
    system: &str,
    features: &BTreeSet<String>,
) -> Choice {
    let mut best: Option<(usize, u64)> = None;
    let mut fitting = false;
    for (index, machine) in machines.iter().enumerate() {
        if disabled.contains(&index) || !machine.fits(system, features) {
            continue;
        }
        fitting = true;
        let load = busy.get(index).copied().unwrap_or(0);
        if load >= machine.max_jobs {
            continue;
        }
        let better = match best {
            None => true,
            Some((best_index, best_load)) => {
                let other = &machines[best_index];
                let (mine, theirs) = (
                    load as f64 / machine.speed_factor,
                    best_load as f64 / other.speed_factor,
                );
                mine < theirs
                    || (mine == theirs
                        && (machine.speed_factor > other.speed_factor
                            || (machine.speed_factor == other.speed_factor && load < best_load)))
            }
        };
        if better {
            best = Some((index, load));
        }
    }
    match (best, fitting) {
        (Some((index, _)), _) => Choice::Machine(index),
        (None, true) => Choice::AllBusy,
        (None, false) => Choice::NoneFits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_files(_: &str) -> Option<String> {
        None
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn nix_machine_lines_parse_with_their_defaults() {
        let text = "# a comment\n\
            ssh-ng://builder@a x86_64-linux,i686-linux /k 4 2 kvm,big-parallel benchmark AAAA\n\
            b - - - - - - -;  c # trailing\n\n@/missing";
        let machines = parse(text, "x86_64-linux", &mut no_files).unwrap();
        assert_eq!(machines.len(), 3);
        let a = &machines[0];
        assert_eq!(a.store_uri, "ssh-ng://builder@a");
        assert_eq!(a.systems, ["x86_64-linux", "i686-linux"]);
        assert_eq!(a.ssh_key.as_deref(), Some("/k"));
        assert_eq!((a.max_jobs, a.speed_factor), (4, 2.0));
        assert_eq!(a.supported_features, set(&["kvm", "big-parallel"]));
        assert_eq!(a.mandatory_features, set(&["benchmark"]));
        assert_eq!(a.host_key.as_deref(), Some("AAAA"));
        for (m, host) in machines[1..].iter().zip(["b", "c"]) {
            assert_eq!(m.store_uri, format!("ssh://{host}"));
            assert_eq!(m.systems, ["x86_64-linux"]);
            assert_eq!(
                (m.ssh_key.as_ref(), m.max_jobs, m.speed_factor),
                (None, 1, 1.0)
            );
        }
    }

    #[test]
    fn machine_files_are_read_and_bad_fields_refused() {
        let mut read = |file: &str| (file == "/etc/nix/machines").then(|| "x y".to_owned());
        let machines = parse("@/etc/nix/machines\n@ /none", "s", &mut read).unwrap();
        assert_eq!(machines.len(), 1);
        assert_eq!(machines[0].systems, ["y"]);
        let error = parse("host s - many", "s", &mut no_files).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bad machine specification 'host s - many': the maximum of jobs 'many' is not a number"
        );
        // Special store words and paths are kept as they are.
        for uri in ["daemon", "local?root=/r", "/some/store", "auto"] {
            assert_eq!(parse(uri, "s", &mut no_files).unwrap()[0].store_uri, uri);
        }
    }

    #[test]
    fn the_choice_is_nixs() {
        let text = "slow s - 2 1 kvm; fast s - 2 4; odd t - 1 1 - bench";
        let machines = parse(text, "s", &mut no_files).unwrap();
        let none = BTreeSet::new();
        // The faster of two idle machines; then by load for speed.
        assert_eq!(
            choose(&machines, &[0, 0, 0], &none, "s", &set(&[])),
            Choice::Machine(1)
        );
        assert_eq!(
            choose(&machines, &[0, 1, 0], &none, "s", &set(&[])),
            Choice::Machine(0)
        );
        assert_eq!(
            choose(&machines, &[2, 1, 0], &none, "s", &set(&[])),
            Choice::Machine(1)
        );
        assert_eq!(
            choose(&machines, &[2, 2, 0], &none, "s", &set(&[])),
            Choice::AllBusy
        );
        // Features: offered, mandatory.
        assert_eq!(
            choose(&machines, &[0, 0, 0], &none, "s", &set(&["kvm"])),
            Choice::Machine(0)
        );
        assert_eq!(
            choose(&machines, &[0, 0, 0], &none, "t", &set(&[])),
            Choice::NoneFits
        );
        assert_eq!(
            choose(&machines, &[0, 0, 0], &none, "t", &set(&["bench"])),
            Choice::Machine(2)
        );
        assert_eq!(
            choose(&machines, &[0, 0, 0], &none, "builtin", &set(&[])),
            Choice::Machine(1)
        );
        // A disabled machine is passed over.
        let disabled = BTreeSet::from([1]);
        assert_eq!(
            choose(&machines, &[0, 0, 0], &disabled, "s", &set(&[])),
            Choice::Machine(0)
        );
    }
}
