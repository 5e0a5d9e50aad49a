//! The harness's data files: `kernels` (what to boot and where Debian
//! keeps it) and `kernel-differences` (what each kernel lacks).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One kernel of `vm-tests/kernels`.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSource {
    /// The name the harness and `kernel-differences` use (`6.1`).
    pub name: String,
    /// The Debian suite that offers it (`bookworm-security`).
    pub suite: String,
    /// A glob for the package's name; its `*` part names the companions.
    pub package: String,
    /// A glob for the package's version.
    pub version: String,
    /// Globs for packages fetched with it, `*` standing for the same text.
    pub companions: Vec<String>,
}

/// The meaningful lines of a data file: number and whitespace-split fields.
fn records(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.split('#').next().unwrap_or("")))
        .map(|(n, line)| (n, line.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, fields)| !fields.is_empty())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads `vm-tests/kernels`.
pub fn kernels(path: &Path) -> Result<Vec<KernelSource>> {
    parse_kernels(&read(path)?).with_context(|| format!("in {}", path.display()))
}

fn parse_kernels(text: &str) -> Result<Vec<KernelSource>> {
    let mut kernels: Vec<KernelSource> = Vec::new();
    for (line, fields) in records(text) {
        let [name, suite, package, version, ref companions @ ..] = fields[..] else {
            bail!("line {line}: expected `name suite package version [companion…]`");
        };
        if !package.contains('*') && !companions.is_empty() {
            bail!("line {line}: companions need a `*` in the package pattern");
        }
        if kernels.iter().any(|k| k.name == name) {
            bail!("line {line}: kernel '{name}' is listed twice");
        }
        kernels.push(KernelSource {
            name: name.into(),
            suite: suite.into(),
            package: package.into(),
            version: version.into(),
            companions: companions.iter().map(|c| c.to_string()).collect(),
        });
    }
    Ok(kernels)
}

/// Reads `vm-tests/kernel-differences`: kernel name to the features it
/// lacks. Every kernel it names must be one of `known`.
pub fn differences(path: &Path, known: &[KernelSource]) -> Result<BTreeMap<String, Vec<String>>> {
    parse_differences(&read(path)?, known).with_context(|| format!("in {}", path.display()))
}

fn parse_differences(text: &str, known: &[KernelSource]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut lacks = BTreeMap::new();
    for (line, fields) in records(text) {
        let name = fields[0];
        if !known.iter().any(|k| k.name == name) {
            bail!("line {line}: no kernel '{name}' in vm-tests/kernels");
        }
        let features: Vec<String> = fields[1..].iter().map(|f| f.to_string()).collect();
        if lacks.insert(name.to_string(), features).is_some() {
            bail!("line {line}: kernel '{name}' is listed twice");
        }
    }
    Ok(lacks)
}

/// Whether `text` matches the glob `pattern` (`*` for any text, `?` for
/// one character).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes(), |_| true)
}

/// What the `*` of package pattern `pattern` stood for in package name
/// `name`, if it matches. Here `*` spans no `-`, so that
/// `linux-image-6.1.0-*-amd64` is not `linux-image-6.1.0-56-rt-amd64`.
pub fn package_capture(pattern: &str, name: &str) -> Option<String> {
    let in_name = |c: u8| c != b'-';
    let (p, t) = (pattern.as_bytes(), name.as_bytes());
    if !matches(p, t, in_name) {
        return None;
    }
    let Some(star) = pattern.find('*') else {
        return Some(String::new());
    };
    (star..=t.len())
        .find(|&end| {
            t[star..end].iter().all(|&c| in_name(c)) && matches(&p[star + 1..], &t[end..], in_name)
        })
        .map(|end| name[star..end].to_string())
}

fn matches(p: &[u8], t: &[u8], star_spans: fn(u8) -> bool) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            matches(&p[1..], t, star_spans)
                || (t.first().is_some_and(|&c| star_spans(c)) && matches(p, &t[1..], star_spans))
        }
        (Some(b'?'), Some(_)) => matches(&p[1..], &t[1..], star_spans),
        (Some(a), Some(b)) if a == b => matches(&p[1..], &t[1..], star_spans),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_are_read_with_their_companions() {
        let kernels = parse_kernels(
            "# comment\n\n6.1 bookworm-security linux-image-6.1.0-*-amd64 6.1.*\n\
             7.x trixie-backports linux-binary-*+deb13-amd64 7.* linux-modules-*+deb13-amd64 # note\n",
        )
        .unwrap();
        assert_eq!(kernels.len(), 2);
        assert_eq!(kernels[1].companions, ["linux-modules-*+deb13-amd64"]);
        assert!(parse_kernels("6.1 bookworm-security linux-image-6.1\n").is_err());
        assert!(parse_kernels("a s p v\na s p v\n").is_err());
    }

    #[test]
    fn differences_must_name_known_kernels() {
        let known = parse_kernels("5.10 s p* v\n6.1 s p* v\n").unwrap();
        let lacks = parse_differences("5.10 cgroup.kill fchmodat2\n6.1\n", &known).unwrap();
        assert_eq!(lacks["5.10"], ["cgroup.kill", "fchmodat2"]);
        assert!(lacks["6.1"].is_empty());
        let error = parse_differences("4.19 x\n", &known).unwrap_err();
        assert!(format!("{error}").contains("no kernel '4.19'"));
    }

    #[test]
    fn globs_match_and_capture_the_star() {
        assert!(glob_matches("6.1.*", "6.1.192-2"));
        assert!(!glob_matches("6.1.*", "6.12.117-1"));
        assert!(glob_matches("6.1?.*", "6.12.117-1"));
        assert_eq!(
            package_capture(
                "linux-binary-*+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64"
            )
            .unwrap(),
            "7.3.4"
        );
        assert_eq!(
            package_capture("linux-image-6.1.0-*-amd64", "linux-image-6.1.0-56-rt-amd64"),
            None
        );
        assert_eq!(package_capture("abc", "abc").unwrap(), "");
        assert_eq!(package_capture("a*c", "abd"), None);
    }
}
